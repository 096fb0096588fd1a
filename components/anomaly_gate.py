"""AnomalyGate: stops a run whose examples break the schema.

ExampleValidator records anomalies but lets the run go on. Placed between
it and Transform, this component fails the run instead, so that no
vocabulary is built, nothing is trained and nothing is pushed from a bad
span; its error lists every anomaly with its feature and description.
"""

# No `from __future__ import annotations`: TFX reads the component's
# artifact types from the live annotations.

import os

import tensorflow as tf
from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components.artifacts import span_of

__all__ = ["AnomalyGate", "DataAnomaliesError", "describe_anomalies"]

_ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(ValueError):
    """The examples of a span do not match the curated schema."""


def describe_anomalies(anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """One line per anomalous feature: its name and what is wrong."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(
            reason.description or reason.short_description
            for reason in info.reason
        )
        lines.append(f"{feature}: {reasons or info.description}")
    for reason in anomalies.dataset_anomaly_info.reason:
        lines.append(f"dataset: {reason.description}")
    return lines


@tfx.dsl.components.component
def AnomalyGate(  # noqa: N802 - TFX names components like classes.
    anomalies: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleAnomalies
    ],
    examples: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.Examples
    ],
) -> None:
    """Raises DataAnomaliesError if any split of `anomalies` is not clean."""
    found = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(
            artifact_utils.get_split_uri([anomalies], split), _ANOMALIES_FILE
        )
        proto = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            proto.ParseFromString(f.read())
        found.extend(f"[{split}] {line}" for line in describe_anomalies(proto))
    span = span_of(examples)
    if found:
        raise DataAnomaliesError(
            f"Span {span} ({examples.uri}) does not match the schema; the "
            "run stops before Transform, nothing is trained or pushed:\n  "
            + "\n  ".join(found)
        )
    logging.info("Span %d passed schema validation.", span)

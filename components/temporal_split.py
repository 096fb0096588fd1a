"""An ExampleGen executor that splits a snapshot by time, not by hash.

Evaluating on a random sample of a snapshot measures how well a model
fills gaps in the past; a retrieval model is used on what comes next. This
executor reads CSV files like `CsvExampleGen`'s and cuts the rows into the
output splits in the order of a time feature: with splits `train` (95
buckets) and `eval` (5 buckets), `eval` holds the newest 5% of the rows.

It reuses the fields of TFX's `SplitConfig`, with one change of meaning:
`hash_buckets` of each split is its share of the rows, taken in time order
(oldest split first), and `partition_feature_name` names the int64 time
feature to order by. The cut points are approximate quantiles of that
feature computed by Beam, so the work scales out like the rest of
ExampleGen; rows on a cut point go to the older split, so the newest split
holds only rows strictly newer than every row of the others. A row without
the time feature, or with a value that is not one int64, goes to the
oldest split and is left to schema validation to report.

Before any example is written, the executor checks the span's CSV files
against the curated schema and the span before it
(`components.snapshot_check`) when the component is given
`snapshot_checks`: a bad span stops the run here, with the span, the
file, the row and the field of each problem.

`TemporalExampleGen` is `CsvExampleGen` with this executor.
"""

from __future__ import annotations

import os
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import json_format, struct_pb2
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_gen.csv_example_gen import (
    executor as csv_executor,
)
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import snapshot_check

__all__ = [
    "Executor",
    "TemporalExampleGen",
    "cut_points",
    "snapshot_checks",
    "split_index",
]

# Resolution of the cut points: per-mille quantiles.
_QUANTILES = 1000
_NO_TIME = np.iinfo(np.int64).min
# The settings of `snapshot_checks` that are not `CheckConfig` fields.
_CHECK_PATHS = ("schema_file", "span_pattern")


def _time_of(example: tf.train.Example, feature: str) -> int:
    values = example.features.feature[feature].int64_list.value
    return int(values[0]) if len(values) == 1 else _NO_TIME


def cut_points(quantiles: list[int], shares: list[int]) -> np.ndarray:
    """The time at which each split but the newest ends.

    Args:
      quantiles: `_QUANTILES + 1` values, the minimum first and the maximum
        last, as Beam's `ApproximateQuantiles` returns them.
      shares: each split's share of the rows, oldest split first.
    """
    if not quantiles:  # No rows: nothing will be cut.
        return np.zeros(len(shares) - 1, np.int64)
    total = float(sum(shares))
    ends = np.cumsum(shares[:-1]) / total
    positions = np.rint(ends * (len(quantiles) - 1)).astype(int)
    return np.asarray(quantiles, np.int64)[positions]


def split_index(time: int, cuts: np.ndarray) -> int:
    """The split of a row: the first whose end is at or after its time."""
    return int(np.searchsorted(cuts, time, side="left"))


def _partition(
    example: tf.train.Example, unused_splits: int, feature: str, cuts
) -> int:
    return split_index(_time_of(example, feature), cuts)


def snapshot_checks(exec_properties: dict[str, Any]) -> dict[str, Any] | None:
    """The `snapshot_checks` the component was given, if any."""
    text = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not text:
        return None
    custom = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(text, custom)
    if not custom.custom_config.Is(struct_pb2.Struct.DESCRIPTOR):
        return None
    values = struct_pb2.Struct()
    custom.custom_config.Unpack(values)
    return json_format.MessageToDict(values).get("snapshot_checks")


def _check_snapshot(
    exec_properties: dict[str, Any], settings: dict[str, Any]
) -> None:
    """Runs `snapshot_check.check_span` on the files this run reads."""
    settings = dict(settings)
    schema = snapshot_check.read_schema(settings.pop("schema_file"))
    pattern = settings.pop("span_pattern", "")
    config = snapshot_check.CheckConfig.from_dict(settings)
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
        input_config,
    )
    base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    span = int(exec_properties.get("span") or 0)
    files = sorted(
        path
        for split in input_config.splits
        for path in tf.io.gfile.glob(os.path.join(base, split.pattern))
    )
    previous = None
    found = snapshot_check.previous_span(base, pattern, span)
    if found is not None:
        try:
            previous = snapshot_check.span_facts(*found, config.time_column)
        except (ValueError, OSError, tf.errors.OpError) as error:
            logging.warning(
                "Span %d: the files of span %d cannot be read (%s); the "
                "checks against the span before are skipped.",
                span,
                found[0],
                error,
            )
    snapshot_check.check_span(span, files, schema, config, previous=previous)


class Executor(csv_executor.Executor):
    """`CsvExampleGen`'s executor with time-ordered splits (module doc)."""

    def Do(  # noqa: N802 - the TFX executor interface.
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        settings = snapshot_checks(exec_properties)
        if settings is not None:
            _check_snapshot(exec_properties, settings)
        super().Do(input_dict, output_dict, exec_properties)

    def GenerateExamplesByBeam(  # noqa: N802 - the TFX executor interface.
        self,
        pipeline: beam.Pipeline,
        exec_properties: dict[str, Any],
    ) -> dict[str, beam.pvalue.PCollection]:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
            input_config,
        )
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
            output_config,
        )
        split_config = output_config.split_config
        feature = split_config.partition_feature_name
        if len(input_config.splits) != 1 or len(split_config.splits) < 2:
            raise ValueError(
                "A time-ordered split needs one input split and at least "
                f"two output splits; got {len(input_config.splits)} and "
                f"{len(split_config.splits)}."
            )
        if not feature:
            raise ValueError(
                "A time-ordered split needs split_config."
                "partition_feature_name: the int64 time feature."
            )
        shares = [split.hash_buckets for split in split_config.splits]
        exec_properties["_beam_pipeline_args"] = self._beam_pipeline_args or []

        records = pipeline | "InputToRecord" >> (
            self.GetInputSourceToExamplePTransform()(
                exec_properties, input_config.splits[0].pattern
            )
        )
        cuts = (
            records
            | "Times" >> beam.Map(_time_of, feature)
            | "Quantiles"
            >> beam.transforms.stats.ApproximateQuantiles.Globally(
                _QUANTILES + 1
            )
            | "CutPoints" >> beam.Map(cut_points, shares)
        )
        parts = records | "SplitByTime" >> beam.Partition(
            _partition, len(shares), feature, beam.pvalue.AsSingleton(cuts)
        )
        return {
            split.name: parts[i] for i, split in enumerate(split_config.splits)
        }


class TemporalExampleGen(tfx.components.CsvExampleGen):
    """CsvExampleGen whose output splits are cut in time order.

    Takes CsvExampleGen's arguments; see the module doc for what its
    `output_config` means.
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        input_base: str,
        input_config: example_gen_pb2.Input,
        output_config: example_gen_pb2.Output,
        range_config: Any = None,
        snapshot_checks: dict[str, Any] | None = None,
    ):
        """Builds the component.

        Args:
          input_base: CsvExampleGen's.
          input_config: CsvExampleGen's.
          output_config: CsvExampleGen's; see the module doc.
          range_config: CsvExampleGen's.
          snapshot_checks: when given, the span's files are checked before
            anything is written: `schema_file` (the curated schema),
            `span_pattern` (the input pattern with `{SPAN}`, to find the
            span before) and the fields of `snapshot_check.CheckConfig`.
        """
        custom = None
        if snapshot_checks is not None:
            settings = dict(snapshot_checks)
            if "schema_file" not in settings:
                raise ValueError("snapshot_checks needs a schema_file.")
            snapshot_check.CheckConfig.from_dict(  # Fails early.
                {k: v for k, v in settings.items() if k not in _CHECK_PATHS}
            )
            values = struct_pb2.Struct()
            values.update({"snapshot_checks": settings})
            custom = example_gen_pb2.CustomConfig()
            custom.custom_config.Pack(values)
        # CsvExampleGen takes no custom config; the ExampleGen it extends
        # does, and hands it to the executor.
        FileBasedExampleGen.__init__(
            self,
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            custom_config=custom,
            range_config=range_config,
        )

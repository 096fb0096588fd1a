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

`TemporalExampleGen` is `CsvExampleGen` with this executor.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.example_gen.csv_example_gen import (
    executor as csv_executor,
)
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

__all__ = ["Executor", "TemporalExampleGen", "cut_points", "split_index"]

# Resolution of the cut points: per-mille quantiles.
_QUANTILES = 1000
_NO_TIME = np.iinfo(np.int64).min


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


class Executor(csv_executor.Executor):
    """`CsvExampleGen`'s executor with time-ordered splits (module doc)."""

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

"""CatalogueRecall: Recall@K of a retrieval model, as a TFMA metric.

Each evaluation example is one held-out (user, item) pair. The model's
`score_catalogue` signature gives the user's score for every catalogue
column and `transformed_labels` the column of the pair's item (see
`models.export`). The pair is a hit at K when fewer than K columns score
above the item's column, ties counting in the item's favour. Recall@K is
the weighted share of hits.

TFMA's own `Recall` with `top_k` binarizes a multi-class prediction into
one binary example per catalogue column, which costs a Python pass over
every (pair, item); this metric ranks a pair with one vectorized
comparison. Its results are ordinary TFMA metric results, named
`recall@K`, and thresholds apply to them as to any metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

__all__ = ["CatalogueRecall", "metric_name"]


def metric_name(top_k: int) -> str:
    """The name of the Recall@`top_k` metric in TFMA's results."""
    return f"recall@{top_k}"


class CatalogueRecall(tfma.metrics.Metric):
    """Recall@`top_k` over the whole catalogue (see the module doc)."""

    def __init__(self, top_k: int = 100, name: str | None = None):
        super().__init__(
            _recall_computations, top_k=top_k, name=name or metric_name(top_k)
        )


def _recall_computations(
    top_k: int,
    name: str,
    eval_config: Any = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    sub_keys: Any = None,
    example_weighted: bool = False,
    **unused: Any,
) -> metric_types.MetricComputations:
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            key = metric_types.MetricKey(
                name=name,
                model_name=model_name,
                output_name=output_name,
                example_weighted=example_weighted,
            )
            computations.append(
                metric_types.MetricComputation(
                    keys=[key],
                    preprocessors=[
                        metric_types.StandardMetricInputsPreprocessor()
                    ],
                    combiner=_RecallCombiner(key, eval_config, top_k),
                )
            )
    return computations


class _RecallCombiner(beam.CombineFn):
    """Accumulates (weighted hits, weighted pairs)."""

    def __init__(
        self, key: metric_types.MetricKey, eval_config: Any, top_k: int
    ):
        self._key = key
        self._eval_config = eval_config
        self._top_k = top_k

    def create_accumulator(self) -> list[float]:
        return [0.0, 0.0]

    def add_input(
        self,
        accumulator: list[float],
        element: metric_types.StandardMetricInputs,
    ) -> list[float]:
        for (
            label,
            scores,
            weight,
        ) in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._key.example_weighted,
            flatten=False,
            squeeze=False,
        ):
            scores = np.asarray(scores, np.float64).reshape(-1)
            column = int(np.asarray(label).reshape(-1)[0])
            weight = float(np.asarray(weight).reshape(-1)[0])
            above = np.count_nonzero(scores > scores[column])
            accumulator[0] += weight * (above < self._top_k)
            accumulator[1] += weight
        return accumulator

    def merge_accumulators(
        self, accumulators: Iterable[list[float]]
    ) -> list[float]:
        total = [0.0, 0.0]
        for hits, pairs in accumulators:
            total[0] += hits
            total[1] += pairs
        return total

    def extract_output(
        self, accumulator: list[float]
    ) -> dict[metric_types.MetricKey, float]:
        hits, pairs = accumulator
        return {self._key: hits / pairs if pairs else float("nan")}

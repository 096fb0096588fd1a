"""What the Evaluator found, read back from its TFMA output.

The Evaluator (see `pipeline.pipeline.eval_config`) computes Recall@K for
the candidate and, when one is resolved, for the baseline (the last
blessed model), overall and per cohort slice; its validation result says
which thresholds failed. `read_evaluation` turns both into an
`Evaluation` that the command line and the benchmarks print.
"""

from __future__ import annotations

import dataclasses

import tensorflow_model_analysis as tfma

from models.metrics import metric_name
from pipeline.pipeline import COHORTS, RECALL_CUTOFFS

__all__ = [
    "ALL",
    "BASELINE",
    "CANDIDATE",
    "Evaluation",
    "SLICES",
    "describe_evaluation",
    "read_evaluation",
    "slice_name",
]

ALL = "all"
# Every slice the Evaluator computes, in the order they are shown.
SLICES = (ALL,) + tuple(
    f"{feature}={value}"
    for feature, values in COHORTS.items()
    for value in values
)
CANDIDATE = "candidate"
BASELINE = "baseline"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Recall@K per slice and model, and the verdict.

    Attributes:
      recall: slice name ("all", "user_cohort=new", ...) -> model
        ("candidate" or "baseline") -> K -> Recall@K. A slice with no
        held-out pair is absent.
      pairs: held-out pairs per slice.
      blessed: whether every threshold held.
      failures: one line per threshold that failed, empty when blessed.
    """

    recall: dict[str, dict[str, dict[int, float]]]
    pairs: dict[str, int]
    blessed: bool
    failures: tuple[str, ...]

    @property
    def has_baseline(self) -> bool:
        return any(BASELINE in models for models in self.recall.values())


def slice_name(slice_key) -> str:
    """A TFMA slice key proto as "all" or "feature=value"."""
    parts = []
    for single in slice_key.single_slice_keys:
        kind = single.WhichOneof("kind")
        value = getattr(single, kind)
        if isinstance(value, bytes):
            value = value.decode()
        parts.append(f"{single.column}={value}")
    return ", ".join(parts) or ALL


def _metric(key) -> str:
    return f"{key.name} change" if key.is_diff else key.name


def read_evaluation(evaluation_uri: str) -> Evaluation:
    """Reads the metrics and the validation result of an Evaluator run."""
    names = {metric_name(k): k for k in RECALL_CUTOFFS}
    recall: dict[str, dict[str, dict[int, float]]] = {}
    pairs: dict[str, int] = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        where = slice_name(metrics.slice_key)
        for entry in metrics.metric_keys_and_values:
            key = entry.key
            if key.is_diff:
                continue
            model = BASELINE if key.model_name == BASELINE else CANDIDATE
            value = entry.value.double_value.value
            if key.name in names:
                recall.setdefault(where, {}).setdefault(model, {})[
                    names[key.name]
                ] = value
            elif key.name == "example_count" and model == CANDIDATE:
                pairs[where] = int(value)
    validation = tfma.load_validation_result(evaluation_uri)
    failures = []
    for per_slice in validation.metric_validations_per_slice:
        where = slice_name(per_slice.slice_key)
        for failure in per_slice.failures:
            threshold = failure.metric_threshold
            if threshold.HasField("value_threshold"):
                bound = threshold.value_threshold.lower_bound.value
                rule = f"below the floor {bound:g}"
            else:
                allowed = -threshold.change_threshold.absolute.value
                rule = f"below the baseline by more than {allowed:g}"
            value = failure.metric_value.double_value.value
            shown = (
                f"{value:+.4f}"
                if failure.metric_key.is_diff
                else (f"{value:.4f}")
            )
            failures.append(
                f"{where}: {_metric(failure.metric_key)} {shown} is {rule}"
            )
    for missing in validation.missing_slices:
        values = dict(missing.feature_values) or ALL
        failures.append(f"no held-out pair in the slice {values}")
    return Evaluation(
        recall=recall,
        pairs=pairs,
        blessed=bool(validation.validation_ok),
        failures=tuple(failures),
    )


def _cells(recall: dict[int, float] | None) -> str:
    if not recall:
        return "  ".join(f"{'-':>5}" for _ in RECALL_CUTOFFS)
    return "  ".join(f"{recall[k]:5.3f}" for k in RECALL_CUTOFFS)


def describe_evaluation(
    evaluation: Evaluation, recall_floor: float, regression_tolerance: float
) -> list[str]:
    """A small table of Recall@K per slice, the thresholds and the verdict."""
    ks = "/".join(str(k) for k in RECALL_CUTOFFS)
    lines = [
        f"{'slice':<24}{'pairs':>7}  candidate R@{ks:<10}  baseline R@{ks}"
    ]
    for where in SLICES:
        models = evaluation.recall.get(where)
        if models is None:
            continue
        lines.append(
            f"{where:<24}{evaluation.pairs.get(where, 0):>7,}  "
            f"{_cells(models.get(CANDIDATE)):<23}  "
            f"{_cells(models.get(BASELINE))}"
        )
    gate = max(RECALL_CUTOFFS)
    rule = f"thresholds: R@{gate} >= {recall_floor:g}"
    if evaluation.has_baseline:
        rule += (
            f"; R@{gate} >= baseline - {regression_tolerance:g}, overall "
            "and for returning users"
        )
    else:
        rule += " (no baseline yet: the floor alone)"
    lines.append(rule)
    if evaluation.blessed:
        lines.append("blessed: yes, every threshold holds")
    else:
        lines.append("blessed: no")
        lines += [f"  {failure}" for failure in evaluation.failures]
    return lines

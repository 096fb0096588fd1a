"""InteractionDelta: what changed between the previous snapshot and this one.

Inputs are the new snapshot's examples and, optionally, the pair index that
an earlier run published. Kubeflow Pipelines v2 and Vertex resolve
artifacts only with `LatestArtifactStrategy` and
`LatestBlessedModelStrategy`, so the component keeps its own state: every
run writes a `PairIndex` of its snapshot, pointing to the one it was
diffed against; once the run is done, `components.index_publisher`
publishes it, and the next run's resolver takes the latest published one.
With the model in force as a further input, the chain leads back to the
snapshot that model was trained on. See `pipeline.pipeline.create_pipeline`.

Outputs:
  delta: Examples with splits `added`, `removed`, `modified`, `released`
    (see `components.interaction_delta.diff` for what each means; the
    newest timestamp wins when a snapshot repeats a pair) and `replay`, a
    deterministic sample of the other unchanged pairs, `replay_ratio` times
    the trainable added, modified and released pairs. Rows from a held-out
    split carry `held_out=1` and are never replayed.
  summary: counts of pairs, users and items that changed and the
    distribution of rating changes (`summary.json`), with the headline
    counts as custom properties: `changed_pairs`, `pairs_added`, ...
  catalogue: the items of the new snapshot with their recency-weighted
    popularity; what is not in it is retired.
  index: this snapshot's pairs with their held-out flags, for the next
    run.
  holdout: Examples with one split, `eval`: the rows of the held-out splits,
    with `user_cohort` ("new" or "returning") and `item_cohort` ("new" or
    "known") saying whether the user and the item were in the previous
    snapshot. The Evaluator slices by them.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.artifacts import (
    DeltaSummary,
    ItemCatalogue,
    PairIndex,
    PublishedPairIndex,
)
from components.interaction_delta import executor

__all__ = ["InteractionDelta", "InteractionDeltaSpec"]

_WEEK_SECONDS = 7 * 24 * 3600


class InteractionDeltaSpec(types.ComponentSpec):
    """Parameters, inputs and outputs of InteractionDelta."""

    PARAMETERS = {
        "replay_ratio": ExecutionParameter(type=float),
        "num_shards": ExecutionParameter(type=int),
        "popularity_half_life_seconds": ExecutionParameter(type=int),
        "held_out_splits": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "previous_index": ChannelParameter(
            type=PublishedPairIndex, optional=True
        ),
        "base_model": ChannelParameter(
            type=standard_artifacts.Model, optional=True
        ),
    }
    OUTPUTS = {
        "delta": ChannelParameter(type=standard_artifacts.Examples),
        "summary": ChannelParameter(type=DeltaSummary),
        "catalogue": ChannelParameter(type=ItemCatalogue),
        "index": ChannelParameter(type=PairIndex),
        "holdout": ChannelParameter(type=standard_artifacts.Examples),
    }


class InteractionDelta(base_beam_component.BaseBeamComponent):
    """Diffs a snapshot against the previous one (see the module doc)."""

    SPEC_CLASS = InteractionDeltaSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        previous_index: types.BaseChannel | None = None,
        base_model: types.BaseChannel | None = None,
        replay_ratio: float | data_types.RuntimeParameter = 1.0,
        num_shards: int = 16,
        popularity_half_life_seconds: int = _WEEK_SECONDS,
        held_out_splits: tuple[str, ...] = ("eval",),
    ):
        """Builds the component.

        Args:
          examples: the new snapshot, all splits.
          previous_index: the `PublishedPairIndex` of an earlier run (a
            `PairIndex` folder works too); absent or empty on the first
            run, when every pair is added.
          base_model: the model in force (the last blessed one). The delta
            is taken against the snapshot it was trained on, found by
            following the index's chain of earlier indexes: when recent
            candidates were not blessed, the next warm start still trains
            on everything that changed since the model it starts from.
          replay_ratio: unchanged pairs to replay per added or modified
            pair; a `RuntimeParameter` lets an orchestrated run set it.
          num_shards: shards of users the work is cut into.
          popularity_half_life_seconds: age at which an interaction counts
            half in the catalogue's popularity.
          held_out_splits: splits of `examples` kept for evaluation: their
            rows carry `held_out=1` in the delta, which the Trainer skips,
            and are never in the replay sample.
        """
        runtime = isinstance(replay_ratio, data_types.RuntimeParameter)
        if not runtime and replay_ratio < 0:
            raise ValueError(f"replay_ratio must be >= 0, got {replay_ratio}.")
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
        if popularity_half_life_seconds <= 0:
            raise ValueError(
                "popularity_half_life_seconds must be > 0, got "
                f"{popularity_half_life_seconds}."
            )
        spec = InteractionDeltaSpec(
            examples=examples,
            previous_index=previous_index,
            base_model=base_model,
            replay_ratio=replay_ratio if runtime else float(replay_ratio),
            num_shards=int(num_shards),
            popularity_half_life_seconds=int(popularity_half_life_seconds),
            held_out_splits=json.dumps(list(held_out_splits)),
            delta=types.Channel(type=standard_artifacts.Examples),
            summary=types.Channel(type=DeltaSummary),
            catalogue=types.Channel(type=ItemCatalogue),
            index=types.Channel(type=PairIndex),
            holdout=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)

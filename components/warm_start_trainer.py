"""WarmStartTrainer: TFX Trainer that also sees the delta and the catalogue.

It is the standard Trainer (`run_fn`, `base_model`, ...) with two more
inputs from InteractionDelta: `delta`, the changed pairs and the replay
sample, and `catalogue`, the items that may be recommended. Its executor
writes where they are into the custom config (`delta`: uri, span,
previous span, split paths; `catalogue`: the CSV path) and runs the
standard generic executor, so `run_fn` reads them from
`fn_args.custom_config`. A base model whose files are damaged
(`components.base_model`) is not handed to `run_fn`: training starts cold,
and the training summary gives the damage as the reason.

`VertexExecutor` runs the same executor as a Vertex AI custom training
job, through TFX's Vertex training extension: its custom config takes the
extension's keys (`ai_platform_enable_vertex`, `ai_platform_vertex_region`,
`ai_platform_training_args` with the job's worker pool).
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.extensions.google_cloud_ai_platform.trainer import (
    executor as vertex_trainer_executor,
)
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components import base_model
from components.artifacts import ItemCatalogue, span_of
from components.custom_config import with_custom_config
from components.interaction_delta import executor as delta_executor

__all__ = ["Executor", "VertexExecutor", "WarmStartTrainer", "delta_config"]


def delta_config(delta: Any) -> dict[str, Any]:
    """What `run_fn` needs to know of a delta Examples artifact."""
    previous = (
        delta.get_int_custom_property("previous_span")
        if delta.has_custom_property("previous_span")
        else -1
    )
    return {
        "uri": delta.uri,
        "span": span_of(delta),
        "previous_span": None if previous < 0 else previous,
        "splits": {
            split: artifact_utils.get_split_uri([delta], split)
            for split in artifact_utils.decode_split_names(delta.split_names)
        },
    }


class WarmStartTrainerSpec(specs.TrainerSpec):
    """TrainerSpec with the delta and the item catalogue as extra inputs."""

    INPUTS = {
        **specs.TrainerSpec.INPUTS,
        "delta": ChannelParameter(
            type=standard_artifacts.Examples, optional=True
        ),
        "catalogue": ChannelParameter(type=ItemCatalogue, optional=True),
    }


class Executor(trainer_executor.GenericExecutor):
    """Adds the delta and catalogue to the config, then trains."""

    def Do(  # noqa: N802 - the TFX executor interface.
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        inputs = dict(input_dict)
        extra: dict[str, Any] = {}
        delta = inputs.pop("delta", None) or []
        if delta:
            extra["delta"] = delta_config(
                artifact_utils.get_single_instance(delta)
            )
        catalogue = inputs.pop("catalogue", None) or []
        if catalogue:
            extra["catalogue"] = os.path.join(
                artifact_utils.get_single_instance(catalogue).uri,
                delta_executor.CATALOGUE_FILE,
            )
        # A damaged base model is not warm-started from: training starts
        # cold, as without one, and the summary says why.
        usable, problem = base_model.usable_base_model(
            inputs.pop(specs.BASE_MODEL_KEY, None) or [], "WarmStartTrainer"
        )
        if usable:
            inputs[specs.BASE_MODEL_KEY] = usable
        elif problem:
            logging.warning("Training starts cold: %s.", problem)
            extra["base_model_problem"] = problem
        super().Do(
            inputs, output_dict, with_custom_config(exec_properties, extra)
        )


class VertexExecutor(vertex_trainer_executor.GenericExecutor):
    """Runs `Executor` as a Vertex AI training job instead of in place."""

    def _GetExecutorClass(self):  # noqa: N802 - the extension's interface.
        return Executor


class WarmStartTrainer(base_component.BaseComponent):
    """The Trainer with delta and catalogue inputs (see the module doc)."""

    SPEC_CLASS = WarmStartTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        run_fn: str,
        base_model: types.BaseChannel | None = None,
        delta: types.BaseChannel | None = None,
        catalogue: types.BaseChannel | None = None,
        custom_config: dict[str, Any] | None = None,
        custom_executor_spec: executor_spec.ExecutorSpec | None = None,
    ):
        spec = WarmStartTrainerSpec(
            examples=examples,
            transform_graph=transform_graph,
            base_model=base_model,
            delta=delta,
            catalogue=catalogue,
            train_args=trainer_pb2.TrainArgs(splits=["train"]),
            eval_args=trainer_pb2.EvalArgs(splits=["eval"]),
            run_fn=run_fn,
            custom_config=json_utils.dumps(custom_config or {}),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        )
        super().__init__(spec=spec, custom_executor_spec=custom_executor_spec)

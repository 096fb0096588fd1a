"""GrowingTransform: TFX Transform whose id vocabularies only grow.

It is the standard Transform with one more input, `base_model`: the last
pushed model. Its executor finds the vocabulary files that model carries
(`assets.extra/vocabulary/<name>.tsv`, written by `models.warm_start`) and
hands their paths to `preprocessing_fn` in the custom config under
`previous_vocabularies`; `models.features` keeps those ids at their indices
and appends new ones. Without a base model, or when it has no vocabulary
files, the vocabularies start empty, and the log says why.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import transform_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils, path_utils

from components import base_model
from components.custom_config import with_custom_config
from models import features, warm_start

__all__ = ["Executor", "GrowingTransform", "previous_vocabularies"]


def previous_vocabularies(models: list[Any]) -> dict[str, str]:
    """Paths of the id vocabulary files of a base model, if it has them."""
    if not models:
        logging.info("No base model: the id vocabularies start empty.")
        return {}
    usable, problem = base_model.usable_base_model(models, "GrowingTransform")
    if not usable:
        logging.warning("The id vocabularies start empty: %s.", problem)
        return {}
    model = artifact_utils.get_single_instance(models)
    serving_dir = path_utils.serving_model_path(model.uri)
    found = {}
    for name in (features.USER_VOCABULARY, features.ITEM_VOCABULARY):
        path = warm_start.vocabulary_path(serving_dir, name)
        if not tf.io.gfile.exists(path):
            logging.warning(
                "The base model %s has no vocabulary file %s: the id "
                "vocabularies start empty.",
                model.uri,
                path,
            )
            return {}
        found[name] = path
    logging.info("Id vocabularies grow from those of %s", serving_dir)
    return found


class GrowingTransformSpec(specs.TransformSpec):
    """TransformSpec with the base model as an extra, optional input."""

    INPUTS = {
        **specs.TransformSpec.INPUTS,
        "base_model": ChannelParameter(
            type=standard_artifacts.Model, optional=True
        ),
    }


class Executor(transform_executor.Executor):
    """Adds the base model's vocabularies to the config, then transforms."""

    def Do(  # noqa: N802 - the TFX executor interface.
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        inputs = dict(input_dict)
        base_models = inputs.pop("base_model", None) or []
        exec_properties = with_custom_config(
            exec_properties,
            {"previous_vocabularies": previous_vocabularies(base_models)},
        )
        super().Do(inputs, output_dict, exec_properties)


class GrowingTransform(base_beam_component.BaseBeamComponent):
    """Transform with append-only id vocabularies (see the module doc).

    Neither statistics of the transformed data nor transformed examples
    are written: nothing reads the statistics, and the Trainer applies the
    transform graph to raw examples as it reads them. Each would cost a
    pass over the snapshot.
    """

    SPEC_CLASS = GrowingTransformSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        schema: types.BaseChannel,
        preprocessing_fn: str,
        splits_config: transform_pb2.SplitsConfig,
        base_model: types.BaseChannel | None = None,
        custom_config: dict[str, Any] | None = None,
    ):
        spec = GrowingTransformSpec(
            examples=examples,
            schema=schema,
            base_model=base_model,
            preprocessing_fn=preprocessing_fn,
            force_tf_compat_v1=0,
            splits_config=splits_config,
            custom_config=json_utils.dumps(custom_config or {}),
            disable_statistics=1,
            transform_graph=types.Channel(
                type=standard_artifacts.TransformGraph
            ),
            updated_analyzer_cache=types.Channel(
                type=standard_artifacts.TransformCache
            ),
        )
        super().__init__(spec=spec)

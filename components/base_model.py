"""Whether the base model (the last blessed one) can be started from.

Three components take the base model: GrowingTransform grows its
vocabularies, WarmStartTrainer copies its weights, and the Evaluator
compares the candidate with it. A base model whose files were truncated
or overwritten must not feed any of them: a vocabulary of garbage ids
would be reserved forever, weights of garbage would be trained on, and a
baseline that cannot be loaded fails the Evaluator. Each of them checks
it first:

- `saved_model_problem`: `saved_model.pb` parses and has the signatures
  the Evaluator and serving call; every variable of the checkpoint reads
  back (TensorFlow checks each one's checksum).
- `warm_start_problem`: the vocabulary files are UTF-8 lines of
  `id<TAB>count` with distinct, non-empty ids; the warm-start weights and
  state read back (`models.warm_start.read_state`) and agree with them.

A base model with a problem is set aside, and each component logs one
warning naming it and the problem: the vocabularies start empty, the
Trainer starts cold (its training summary says why) and the Evaluator
judges on the floor alone, as on a first run. The Evaluator only needs the
SavedModel: it keeps a baseline whose warm-start files alone are damaged.
The served model is not touched; the next push adds a version beside it.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from absl import logging
from google.protobuf import message
from tensorflow.core.protobuf import saved_model_pb2
from tfx import v1 as tfx
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as specs
from tfx.utils import path_utils

from models import features, warm_start

__all__ = [
    "CheckedEvaluator",
    "EvaluatorExecutor",
    "REQUIRED_SIGNATURES",
    "base_model_problem",
    "saved_model_problem",
    "usable_base_model",
    "warm_start_problem",
]

REQUIRED_SIGNATURES = ("serving_default", "score_catalogue")
"""Signatures a base model needs: serving's and the Evaluator's."""

_VOCABULARIES = (features.USER_VOCABULARY, features.ITEM_VOCABULARY)


def saved_model_problem(serving_dir: str) -> str | None:
    """Why the SavedModel in `serving_dir` cannot be loaded, or None."""
    path = os.path.join(serving_dir, "saved_model.pb")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            saved = saved_model_pb2.SavedModel.FromString(f.read())
    except (tf.errors.OpError, message.DecodeError, RuntimeError) as error:
        return f"{path} cannot be read ({type(error).__name__}: {error})"
    if not saved.meta_graphs:
        return f"{path} holds no graph"
    signatures = saved.meta_graphs[0].signature_def
    missing = [name for name in REQUIRED_SIGNATURES if name not in signatures]
    if missing:
        return f"{path} lacks the signatures {missing}"
    prefix = os.path.join(serving_dir, "variables", "variables")
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001 - whatever the damage
        return (
            f"the variables under {prefix} cannot be read "
            f"({type(error).__name__}: {error})"
        )
    return None


def _vocabulary_problem(path: str) -> str | None:
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (tf.errors.OpError, UnicodeDecodeError) as error:
        return f"{path} cannot be read ({type(error).__name__}: {error})"
    if text and not text.endswith("\n"):
        return f"{path} is cut short: its last line has no end"
    seen = set()
    for number, line in enumerate(text.splitlines(), start=1):
        token, tab, count = line.partition("\t")
        if not tab or not token.strip() or not count.isdigit():
            return (
                f"{path}, line {number}: {line[:40]!r} is not "
                "'<id><TAB><count>'"
            )
        if token in seen:
            return f"{path}, line {number}: the id {token!r} appears twice"
        seen.add(token)
    return None


def warm_start_problem(serving_dir: str) -> str | None:
    """Why the warm-start files in `serving_dir` cannot be used, or None."""
    for name in _VOCABULARIES:
        problem = _vocabulary_problem(
            warm_start.vocabulary_path(serving_dir, name)
        )
        if problem:
            return problem
    try:
        warm_start.read_state(serving_dir)
    except warm_start.ColdStart as reason:
        return str(reason)
    except Exception as error:  # noqa: BLE001 - anything unreadable
        return (
            f"the warm-start files in {serving_dir} cannot be read "
            f"({type(error).__name__}: {error})"
        )
    return None


def base_model_problem(serving_dir: str) -> str | None:
    """Why a base model cannot be started from, or None when it can."""
    return saved_model_problem(serving_dir) or warm_start_problem(serving_dir)


def usable_base_model(
    models: list[Any], consumer: str, what: str = "all"
) -> tuple[list[Any], str | None]:
    """The base model input if it is usable, else no model and why.

    The caller logs what it does instead.

    Args:
      models: the `base_model` (or `baseline_model`) input: none or one
        Model artifact.
      consumer: the component asking, for the log.
      what: "all" checks the SavedModel and the warm-start files;
        "saved_model" the SavedModel only.
    """
    if not models:
        return [], None
    model = artifact_utils.get_single_instance(models)
    serving_dir = path_utils.serving_model_path(model.uri)
    check = saved_model_problem if what == "saved_model" else base_model_problem
    problem = check(serving_dir)
    if problem is None:
        logging.info("%s: the base model %s is intact.", consumer, model.uri)
        return list(models), None
    return [], f"the base model {model.uri} is unusable: {problem}"


class EvaluatorExecutor(evaluator_executor.Executor):
    """The Evaluator's executor, without a baseline that cannot load."""

    def Do(  # noqa: N802 - the TFX executor interface.
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        inputs = dict(input_dict)
        baseline, problem = usable_base_model(
            inputs.get(specs.BASELINE_MODEL_KEY) or [],
            "Evaluator",
            what="saved_model",
        )
        if problem:
            logging.warning(
                "Evaluator: no baseline (%s); the candidate is judged on "
                "the floor alone.",
                problem,
            )
            inputs.pop(specs.BASELINE_MODEL_KEY, None)
        elif baseline:
            inputs[specs.BASELINE_MODEL_KEY] = baseline
        super().Do(inputs, output_dict, exec_properties)


class CheckedEvaluator(tfx.components.Evaluator):
    """The Evaluator, setting aside a baseline that cannot be loaded."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(EvaluatorExecutor)

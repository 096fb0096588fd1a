"""AtomicPusher: a Pusher that never leaves a half-written version.

TFX's Pusher copies a blessed model file by file into
`<serving root>/<version>/`; a run killed while it copies leaves a version
folder that a model server may try to load. This Pusher copies into a
hidden sibling folder, `<serving root>/.incomplete-<version>-<id>/`, and
renames it to `<version>/` once every file is there: on a local or POSIX
file system the rename is atomic, so the serving root holds complete
versions only. Folders a crash left behind are ignored by readers (model
servers load numeric folders only; `served_versions` lists complete ones)
and removed by the next push. On an object store (`gs://`, ...), where a
folder cannot be renamed at once, it copies straight into `<version>/`
with `saved_model.pb` last, as TFX's Pusher does: a server sees the
version when that file lands.

Versions are Unix seconds, as with TFX's Pusher, but always above the
newest version there, so two pushes in one second get two versions.

Each pushed version carries `assets.extra/push.json`: the model artifact
it came from, and the span and input fingerprint of the snapshot it was
trained on (from the `examples` input). A run whose snapshot is already
served, a rerun of a span, does not push a second version: it reports
the model as not pushed and names the served version in the custom
property `already_served`; if the served version is this very model (a
run that was killed after its push), it reports that version as pushed.

The outputs are the Pusher's: `pushed_model` with the custom properties
`pushed`, `pushed_destination` and `pushed_version`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Any

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils, json_utils, proto_utils

__all__ = [
    "AtomicPusher",
    "Executor",
    "PUSH_RECORD",
    "TEMPORARY_PREFIX",
    "read_push_record",
    "served_versions",
]

PUSH_RECORD = os.path.join("assets.extra", "push.json")
"""Where a pushed version says what it was pushed from."""

TEMPORARY_PREFIX = ".incomplete-"
"""The name of a version folder being written starts with this."""

_SAVED_MODEL = "saved_model.pb"
_ALREADY_SERVED = "already_served"


def served_versions(serving_root: str) -> list[str]:
    """The complete versions under a serving root, oldest first.

    A version is a folder with a numeric name that holds `saved_model.pb`;
    folders being written, or left by a crash, are not listed.
    """
    if not tf.io.gfile.isdir(serving_root):
        return []
    versions = []
    for name in tf.io.gfile.listdir(serving_root):
        name = name.rstrip("/")
        path = os.path.join(serving_root, name)
        if name.isdigit() and tf.io.gfile.exists(
            os.path.join(path, _SAVED_MODEL)
        ):
            versions.append((int(name), path))
    return [path for _, path in sorted(versions)]


def read_push_record(version_dir: str) -> dict[str, Any] | None:
    """What a pushed version was pushed from; None if it does not say."""
    path = os.path.join(version_dir, PUSH_RECORD)
    try:
        with tf.io.gfile.GFile(path) as f:
            record = json.load(f)
    except (tf.errors.OpError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _copy_file(source: str, target: str) -> None:
    """Copies one file of a model (the unit a test can make fail)."""
    tf.io.gfile.copy(source, target, overwrite=True)


def _write_version(model_dir: str, target: str, record: dict[str, Any]) -> None:
    """Copies a model into `target`, the push record, then saved_model.pb.

    `saved_model.pb` goes last: servers and `served_versions` take a
    folder without it for an incomplete one.
    """
    tf.io.gfile.makedirs(target)
    last = None
    for folder, _, files in tf.io.gfile.walk(model_dir):
        relative = os.path.relpath(folder, model_dir)
        into = os.path.normpath(os.path.join(target, relative))
        tf.io.gfile.makedirs(into)
        for name in files:
            if relative == "." and name == _SAVED_MODEL:
                last = os.path.join(folder, name)
                continue
            _copy_file(os.path.join(folder, name), os.path.join(into, name))
    record_path = os.path.join(target, PUSH_RECORD)
    tf.io.gfile.makedirs(os.path.dirname(record_path))
    with tf.io.gfile.GFile(record_path, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    if last is None:
        raise FileNotFoundError(f"{model_dir} holds no {_SAVED_MODEL}.")
    _copy_file(last, os.path.join(target, _SAVED_MODEL))


def _remove_leftovers(serving_root: str) -> None:
    """Removes the folders of pushes that did not finish."""
    for name in tf.io.gfile.listdir(serving_root):
        name = name.rstrip("/")
        if name.startswith(TEMPORARY_PREFIX):
            path = os.path.join(serving_root, name)
            logging.warning(
                "Removing %s, left by a push that did not finish.", path
            )
            tf.io.gfile.rmtree(path)


def _next_version(serving_root: str) -> int:
    """Unix seconds, or one above the newest numeric folder if later."""
    numbers = [
        int(name.rstrip("/"))
        for name in tf.io.gfile.listdir(serving_root)
        if name.rstrip("/").isdigit()
    ]
    return max([int(time.time())] + [n + 1 for n in numbers])


def _snapshot_of(input_dict: dict[str, list[Any]]) -> dict[str, Any]:
    """The span and input fingerprint of the snapshot, when known."""
    examples = input_dict.get("examples") or []
    if not examples:
        return {}
    artifact = artifact_utils.get_single_instance(examples)
    found = {}
    if artifact.has_custom_property("span"):
        found["span"] = int(artifact.get_int_custom_property("span"))
    if artifact.has_custom_property("input_fingerprint"):
        found["input_fingerprint"] = artifact.get_string_custom_property(
            "input_fingerprint"
        )
    return found


def _served_from(
    serving_root: str, model_uri: str, snapshot: dict[str, Any]
) -> tuple[str | None, bool]:
    """A served version of this model or snapshot, and whether it is this
    very model."""
    same_snapshot = None
    for version in reversed(served_versions(serving_root)):
        record = read_push_record(version) or {}
        if record.get("model_uri") == model_uri:
            return version, True
        known = {k: record.get(k) for k in snapshot}
        if snapshot and "span" in snapshot and known == snapshot:
            same_snapshot = same_snapshot or version
    return same_snapshot, False


class Executor(pusher_executor.Executor):
    """Pushes a blessed model by writing elsewhere and renaming it."""

    def Do(  # noqa: N802 - the TFX executor interface.
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(
            output_dict[specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            return
        model_dir = self.GetModelPath(input_dict)
        model = artifact_utils.get_single_instance(input_dict[specs.MODEL_KEY])
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[specs.PUSH_DESTINATION_KEY], destination
        )
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError(
                "AtomicPusher pushes to a file system only, got "
                f"{destination.WhichOneof('destination')}."
            )
        root = destination.filesystem.base_directory
        tf.io.gfile.makedirs(root)
        _remove_leftovers(root)
        snapshot = _snapshot_of(input_dict)
        served, same_model = _served_from(root, model.uri, snapshot)
        if served is not None and same_model:
            logging.info("Model %s is already served at %s.", model.uri, served)
            self._MarkPushed(
                pushed,
                pushed_destination=served,
                pushed_version=os.path.basename(served),
            )
            return
        if served is not None:
            logging.info(
                "Span %s from the same snapshot is already served at %s: "
                "not pushing a second version of it.",
                snapshot.get("span"),
                served,
            )
            self._MarkNotPushed(pushed)
            pushed.set_string_custom_property(_ALREADY_SERVED, served)
            return

        version = str(_next_version(root))
        final = os.path.join(root, version)
        record = {
            "model_uri": model.uri,
            "version": version,
            "pushed_at": int(time.time()),
            **snapshot,
        }
        if "://" in root:
            _write_version(model_dir, final, record)
        else:
            temporary = os.path.join(
                root, f"{TEMPORARY_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            )
            try:
                _write_version(model_dir, temporary, record)
            except Exception:
                # A killed process leaves the folder for the next push to
                # remove; an error removes it now.
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            os.replace(temporary, final)
        logging.info("Model written to serving path %s.", final)
        # Like TFX's Pusher: a copy of the pushed model in the artifact.
        io_utils.copy_dir(model_dir, pushed.uri)
        self._MarkPushed(
            pushed, pushed_destination=final, pushed_version=version
        )
        logging.info("Model pushed to %s.", final)


class AtomicPusherSpec(specs.PusherSpec):
    """PusherSpec with the snapshot's examples as an extra input."""

    INPUTS = {
        **specs.PusherSpec.INPUTS,
        "examples": ChannelParameter(
            type=standard_artifacts.Examples, optional=True
        ),
    }


class AtomicPusher(base_component.BaseComponent):
    """The Pusher with atomic versions and no second push of a snapshot."""

    SPEC_CLASS = AtomicPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        serving_root: str,
        examples: types.BaseChannel | None = None,
    ):
        """Builds the component.

        Args:
          model: the Trainer's model.
          model_blessing: the Evaluator's blessing; only a blessed model is
            pushed.
          serving_root: the folder (or gs:// prefix) of the versions.
          examples: the snapshot the model was trained on: its span and
            fingerprint go into the push record, and a snapshot already
            served is not pushed again.
        """
        spec = AtomicPusherSpec(
            model=model,
            model_blessing=model_blessing,
            examples=examples,
            push_destination=pusher_pb2.PushDestination(
                filesystem=pusher_pb2.PushDestination.Filesystem(
                    base_directory=serving_root
                )
            ),
            custom_config=json_utils.dumps(None),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)

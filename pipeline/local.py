"""Runs the pipeline locally: LocalDagRunner, SQLite metadata, DirectRunner.

`run_span` runs one span and returns a `SpanReport` read back from ML
Metadata: what the run's components produced, whether the candidate was
blessed, and where it was pushed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging as absl_logging
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.interaction_delta import executor
from models import features
from models.trainer import read_training_summary
from pipeline.config import PipelineConfig
from pipeline.evaluation import ALL, CANDIDATE, Evaluation, read_evaluation
from pipeline.pipeline import create_pipeline

__all__ = ["SpanReport", "component_progress", "run_span"]


@dataclasses.dataclass(frozen=True)
class SpanReport:
    """What one local run of a span produced.

    Attributes:
      span: the span number ExampleGen read.
      rows: examples in the snapshot (all splits).
      delta: InteractionDelta's summary of what changed since the previous
        snapshot (see `components.interaction_delta`).
      trained: whether the delta was large enough to train; when it was
        not, the vocabulary, recall and blessing fields are empty.
      training: the Trainer's summary: warm or cold start and why, rows
        carried and new, examples and steps trained, seconds (see
        `models.trainer`).
      user_vocabulary: user ids in the user vocabulary.
      item_vocabulary: item ids in the item vocabulary.
      evaluation: what the Evaluator found: Recall@K per slice of the
        candidate and the baseline, the verdict and why.
      blessed: whether the Evaluator blessed the candidate.
      pushed_model: the serving directory the Pusher wrote, if it pushed.
      seconds: wall time of the run.
      component_seconds: wall time of each component that ran, by node id,
        in the order they finished (components skipped or reused from the
        cache are absent).
    """

    span: int
    rows: int
    delta: dict[str, Any]
    trained: bool
    training: dict[str, Any] | None
    user_vocabulary: int | None
    item_vocabulary: int | None
    evaluation: Evaluation | None
    blessed: bool
    pushed_model: str | None
    seconds: float
    component_seconds: dict[str, float] = dataclasses.field(
        default_factory=dict
    )

    @property
    def recall(self) -> dict[int, float]:
        """The candidate's overall Recall@K on the held-out pairs, by K."""
        if self.evaluation is None:
            return {}
        return self.evaluation.recall.get(ALL, {}).get(CANDIDATE, {})


class _ProgressHandler(logging.Handler):
    """Times LocalDagRunner's components from its log lines.

    Each component that runs gets a progress line through `printer` as it
    finishes, and its wall time in `seconds`.
    """

    def __init__(self, printer: Callable[[str], None] | None, prefix: str):
        super().__init__(logging.INFO)
        self._printer = printer or (lambda line: None)
        self._prefix = prefix
        self._started: dict[str, float] = {}
        self._skipped: set[str] = set()
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Skipping execution for "):
            # A node whose condition is false (or whose inputs are absent)
            # is reported as finished too; remember that it did nothing.
            self._skipped.add(message.rsplit(" ", 1)[-1])
            return
        if not message.startswith("Component "):
            return
        node, *_, state = message.rstrip(".").split(" ")[1:]
        if state == "running":
            self._started[node] = time.monotonic()
        elif state == "finished" and node in self._skipped:
            self._printer(f"{self._prefix}{node:<24} skipped")
        elif state == "finished" and node in self._started:
            took = time.monotonic() - self._started[node]
            self.seconds[node] = took
            self._printer(f"{self._prefix}{node:<24} done  {took:6.1f} s")


@contextlib.contextmanager
def component_progress(
    printer: Callable[[str], None] | None, prefix: str = "  "
) -> Iterator[dict[str, float]]:
    """Times the components that run while the block runs.

    Args:
      printer: called with a line per component as it finishes; None for
        no lines.
      prefix: put before each line.

    Yields:
      A dict that fills with each finished component's wall seconds, by
      node id.
    """
    handler = _ProgressHandler(printer, prefix)
    previous = absl_logging.get_verbosity()
    # Through absl's flag, not the logger level: TensorFlow's SavedModel
    # writer resets the verbosity to what the flag says when it is done.
    absl_logging.set_verbosity(max(previous, absl_logging.INFO))
    absl_logging.get_absl_logger().addHandler(handler)
    try:
        yield handler.seconds
    finally:
        absl_logging.get_absl_logger().removeHandler(handler)
        absl_logging.set_verbosity(previous)


def _run_outputs(
    config: PipelineConfig,
) -> dict[str, metadata_store_pb2.Artifact]:
    """The output artifacts of the newest run, keyed by output name.

    The pipeline's output names ("examples", "statistics", "model", ...) are
    unique across its components, so the name alone finds the artifact.
    """
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        )
    )
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        raise RuntimeError(f"No pipeline run in {config.metadata_path}.")
    newest = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = store.get_executions_by_context(newest.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    names = {
        e.artifact_id: e.path.steps[0].key
        for e in events
        if e.type == metadata_store_pb2.Event.OUTPUT and e.path.steps
    }
    return {names[a.id]: a for a in store.get_artifacts_by_id(list(names))}


def _row_count(statistics_uri: str, split_names: str) -> int:
    rows = 0
    for split in artifact_utils.decode_split_names(split_names):
        path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        with tf.io.gfile.GFile(path, "rb") as f:
            stats.ParseFromString(f.read())
        rows += sum(d.num_examples for d in stats.datasets)
    return rows


def _report(
    config: PipelineConfig, seconds: float, component_seconds: dict[str, float]
) -> SpanReport:
    outputs = _run_outputs(config)
    examples = outputs["examples"]
    statistics = outputs["statistics"]
    with tf.io.gfile.GFile(
        os.path.join(outputs["summary"].uri, executor.SUMMARY_FILE)
    ) as f:
        delta = json.load(f)
    report = SpanReport(
        span=examples.custom_properties["span"].int_value,
        rows=_row_count(
            statistics.uri, statistics.properties["split_names"].string_value
        ),
        delta=delta,
        trained="model" in outputs,
        training=None,
        user_vocabulary=None,
        item_vocabulary=None,
        evaluation=None,
        blessed=False,
        pushed_model=None,
        seconds=seconds,
        component_seconds=dict(component_seconds),
    )
    if not report.trained:
        return report
    transform = tft.TFTransformOutput(outputs["transform_graph"].uri)
    blessing = outputs["blessing"]
    pushed = outputs["pushed_model"]
    return dataclasses.replace(
        report,
        training=read_training_summary(
            path_utils.serving_model_path(outputs["model"].uri)
        ),
        user_vocabulary=transform.vocabulary_size_by_name(
            features.USER_VOCABULARY
        ),
        item_vocabulary=transform.vocabulary_size_by_name(
            features.ITEM_VOCABULARY
        ),
        evaluation=read_evaluation(outputs["evaluation"].uri),
        blessed=bool(blessing.custom_properties["blessed"].int_value),
        pushed_model=(
            pushed.custom_properties["pushed_destination"].string_value
            if pushed.custom_properties["pushed"].int_value
            else None
        ),
    )


def run_span(
    config: PipelineConfig,
    printer: Callable[[str], None] | None = None,
) -> SpanReport:
    """Runs the pipeline of `config.span` with LocalDagRunner.

    Args:
      config: the pipeline's settings; `metadata_path` must be set.
      printer: called with a progress line as each component finishes.

    Returns:
      What the run produced, read back from ML Metadata.

    Raises:
      FileNotFoundError: the data root or the span's folder is missing
        (see `PipelineConfig.check_local_paths`).
    """
    if not config.metadata_path:
        raise ValueError("A local run needs config.metadata_path.")
    config.check_local_paths()
    os.makedirs(os.path.dirname(config.metadata_path) or ".", exist_ok=True)
    start = time.monotonic()
    with component_progress(printer) as component_seconds:
        tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    return _report(config, time.monotonic() - start, component_seconds)

"""The one settings object of a freshtower pipeline."""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

from models.model import ModelConfig

__all__ = [
    "PROJECT_ROOT",
    "PipelineConfig",
    "SCHEMA_DIR",
    "SPAN_PATTERN",
    "TrainerResources",
    "VertexTraining",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = PROJECT_ROOT / "schema"
SPAN_PATTERN = "span-{SPAN}/*.csv"
"""Where a span's files are under the data root; ExampleGen fills {SPAN}."""


@dataclasses.dataclass(frozen=True)
class TrainerResources:
    """What the Trainer's container asks a cluster for.

    Attributes:
      accelerator_type: the accelerator, as the orchestrator names it:
        a Kubernetes resource such as "nvidia.com/gpu" on a self-hosted
        Kubeflow cluster, a Vertex name such as "NVIDIA_TESLA_T4" on
        Vertex; empty for none.
      accelerator_count: accelerators per Trainer.
      cpu_limit: CPU cores; 0 leaves it to the cluster.
      memory_limit_gib: memory in GiB; 0 leaves it to the cluster.
      machine_type: the machine of a Vertex training job (Vertex only).
    """

    accelerator_type: str = ""
    accelerator_count: int = 0
    cpu_limit: float = 0.0
    memory_limit_gib: float = 0.0
    machine_type: str = "n1-standard-8"

    def __post_init__(self):
        if self.accelerator_count < 0:
            raise ValueError(
                f"accelerator_count must be >= 0, got {self.accelerator_count}."
            )
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            raise ValueError(
                "accelerator_type and accelerator_count go together: got "
                f"{self.accelerator_type!r} and {self.accelerator_count}."
            )
        if self.cpu_limit < 0 or self.memory_limit_gib < 0:
            raise ValueError("cpu_limit and memory_limit_gib must be >= 0.")


@dataclasses.dataclass(frozen=True)
class VertexTraining:
    """Run the Trainer as a Vertex AI custom training job.

    The Trainer's own container then only launches the job; the job runs
    `image` on one worker with the machine and accelerators of
    `PipelineConfig.trainer_resources`.

    Attributes:
      project: Google Cloud project of the training job.
      region: Vertex AI region, such as "us-central1".
      image: container image of the job: the pipeline's image.
    """

    project: str
    region: str
    image: str


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Where a pipeline reads and writes, and how it trains and judges.

    Attributes:
      data_root: folder (or gs:// prefix) holding `span-<N>/*.csv`.
      pipeline_root: where TFX writes artifacts.
      serving_root: where the Pusher writes versioned SavedModels.
      metadata_path: SQLite ML Metadata file of local runs; `None` for
        orchestrators that bring their own metadata store.
      name: pipeline name, also the metadata context.
      span: the span to run; `None` takes the newest span under data_root.
      schema_dir: folder of the curated `schema.pbtxt`.
      holdout_fraction: share of a snapshot's rows, the newest in time,
        held out from training for the Evaluator.
      recall_floor: Recall@100 a candidate needs to be blessed.
      regression_tolerance: how far the candidate's Recall@100, overall
        and for returning users, may fall below the baseline's (the last
        blessed model's) and still be blessed.
      replay_ratio: unchanged pairs replayed per added or modified pair
        when training on a delta.
      min_delta_pairs: a span whose pairs added, removed and modified
        since the previous snapshot number fewer than this trains nothing
        and pushes nothing.
      delta_shards: shards of users the delta computation is cut into.
      popularity_half_life_seconds: age at which an interaction counts half
        in the catalogue's popularity.
      vocabulary_min_count: interactions a new id needs in a snapshot to get
        its own vocabulary row; rarer ids share hashed buckets.
      full_retrain: train from scratch on the whole snapshot, whatever
        the base model.
      full_retrain_every: spans whose number is a multiple of this retrain
        from scratch; 0 never does.
      model: hyperparameters of the two-tower model.
      beam_args: Beam pipeline options of the data components
        (ExampleGen, StatisticsGen, InteractionDelta, Transform,
        Evaluator). None, the default, runs them on the DirectRunner in
        this process; Dataflow, Flink or Spark options run them there.
        With any option set, TFX also packages itself for remote workers
        at every Beam component (seconds each), so local runs set none.
      enable_cache: reuse the outputs of components whose inputs match.
      trainer_resources: accelerators, CPU and memory of the Trainer on a
        cluster; `None` asks for nothing. Local runs ignore it.
      vertex_training: run the Trainer as a Vertex AI training job.
      runtime_parameters: expose `replay_ratio` as a runtime parameter of
        the compiled pipeline, which a Kubeflow or Vertex run can set
        without compiling again (the config's value is its default).
      max_snapshot_growth: a span with more than this many times the rows
        of the span before is stopped as an anomaly; 0 checks nothing.
      max_duplicate_fraction: the largest share of a span's rows that may
        repeat an earlier row's (user_id, item_id) pair; the delta keeps
        the newest row of each pair.
      max_clock_skew_seconds: how far past the time of the run a
        timestamp may be before the span is stopped as from the future.
    """

    data_root: str
    pipeline_root: str
    serving_root: str
    metadata_path: str | None = None
    name: str = "freshtower"
    span: int | None = None
    schema_dir: str = str(SCHEMA_DIR)
    holdout_fraction: float = 0.05
    recall_floor: float = 0.05
    regression_tolerance: float = 0.01
    replay_ratio: float = 1.0
    min_delta_pairs: int = 1
    delta_shards: int = 16
    popularity_half_life_seconds: int = 7 * 24 * 3600
    vocabulary_min_count: int = 1
    full_retrain: bool = False
    full_retrain_every: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    beam_args: tuple[str, ...] = ()
    enable_cache: bool = True
    trainer_resources: TrainerResources | None = None
    vertex_training: VertexTraining | None = None
    runtime_parameters: bool = False
    max_snapshot_growth: float = 10.0
    max_duplicate_fraction: float = 0.05
    max_clock_skew_seconds: int = 3600

    def __post_init__(self):
        if self.span is not None and self.span < 0:
            raise ValueError(f"span must be >= 0, got {self.span}.")
        if not 0.001 <= self.holdout_fraction <= 0.5:
            raise ValueError(
                "holdout_fraction must be in [0.001, 0.5], got "
                f"{self.holdout_fraction}."
            )
        if not 0.0 <= self.regression_tolerance <= 1.0:
            raise ValueError(
                "regression_tolerance must be in [0, 1], got "
                f"{self.regression_tolerance}."
            )
        if not 0.0 <= self.recall_floor <= 1.0:
            raise ValueError(
                f"recall_floor must be in [0, 1], got {self.recall_floor}."
            )
        if self.replay_ratio < 0:
            raise ValueError(
                f"replay_ratio must be >= 0, got {self.replay_ratio}."
            )
        if self.min_delta_pairs < 0:
            raise ValueError(
                f"min_delta_pairs must be >= 0, got {self.min_delta_pairs}."
            )
        if self.vocabulary_min_count < 1:
            raise ValueError(
                "vocabulary_min_count must be >= 1, got "
                f"{self.vocabulary_min_count}."
            )
        if self.full_retrain_every < 0:
            raise ValueError(
                "full_retrain_every must be >= 0, got "
                f"{self.full_retrain_every}."
            )
        if self.max_snapshot_growth < 0:
            raise ValueError(
                "max_snapshot_growth must be >= 0, got "
                f"{self.max_snapshot_growth}."
            )
        if not 0.0 <= self.max_duplicate_fraction <= 1.0:
            raise ValueError(
                "max_duplicate_fraction must be in [0, 1], got "
                f"{self.max_duplicate_fraction}."
            )
        if self.max_clock_skew_seconds < 0:
            raise ValueError(
                "max_clock_skew_seconds must be >= 0, got "
                f"{self.max_clock_skew_seconds}."
            )
        for name in ("data_root", "pipeline_root", "serving_root"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"{name} must not be empty.")
        schema = os.path.join(self.schema_dir, "schema.pbtxt")
        # An orchestrated run reads the schema inside its container, not
        # on the machine that compiles it: only a local run checks it here.
        local = self.metadata_path is not None
        if local and "://" not in schema and not os.path.isfile(schema):
            raise FileNotFoundError(
                f"schema_dir {self.schema_dir!r} holds no schema.pbtxt."
            )

    def check_local_paths(self) -> None:
        """Checks, before a local run, the paths it reads and writes.

        Raises:
          FileNotFoundError: the data root is not a folder, or the span
            asked for has no folder or no CSV file under it; the message
            names the path.
          NotADirectoryError: the pipeline or serving root, or the
            metadata file's folder, exists and is not a folder.
        """
        if "://" in self.data_root:
            return  # Read where the components run, with their own errors.
        if not os.path.isdir(self.data_root):
            raise FileNotFoundError(
                f"data_root {self.data_root!r} is not a folder."
            )
        span = "*" if self.span is None else str(self.span)
        pattern = os.path.join(self.data_root, SPAN_PATTERN)
        wanted = pattern.replace("{SPAN}", span)
        if not glob.glob(wanted):
            folder = os.path.dirname(wanted)
            state = "holds no file" if glob.glob(folder) else "does not exist"
            which = "No span" if self.span is None else f"Span {self.span}"
            raise FileNotFoundError(
                f"{which}: {folder!r} {state} (the pipeline reads {wanted!r})."
            )
        folders = [self.pipeline_root, self.serving_root]
        if self.metadata_path:
            folders.append(os.path.dirname(self.metadata_path) or ".")
        for folder in folders:
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise NotADirectoryError(f"{folder!r} is not a folder.")

    @classmethod
    def local(
        cls, workdir: str | os.PathLike, data_root: str | os.PathLike, **kw
    ) -> PipelineConfig:
        """A config for LocalDagRunner with everything under `workdir`."""
        workdir = Path(workdir)
        return cls(
            data_root=str(data_root),
            pipeline_root=str(workdir / "pipeline"),
            serving_root=str(workdir / "serving"),
            metadata_path=str(workdir / "metadata.sqlite"),
            **kw,
        )

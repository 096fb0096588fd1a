"""The freshtower pipeline as one function of its config.

`create_pipeline` is pure: it builds components and wires them, and every
orchestrator (the local runner here, Kubeflow and Vertex in `kubeflow/`)
runs what it returns.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow_model_analysis as tfma
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.extensions.google_cloud_ai_platform import (
    constants as vertex_constants,
)
from tfx.extensions.google_cloud_ai_platform.trainer import (
    executor as vertex_trainer_executor,
)

from components.anomaly_gate import AnomalyGate
from components.artifacts import PublishedPairIndex
from components.atomic_pusher import AtomicPusher
from components.base_model import CheckedEvaluator
from components.index_publisher import PublishIndex
from components.interaction_delta import InteractionDelta
from components.snapshot_check import CheckConfig
from components.temporal_split import TemporalExampleGen
from components.vocabulary_transform import GrowingTransform
from components.warm_start_trainer import VertexExecutor, WarmStartTrainer
from models import features
from pipeline.config import SPAN_PATTERN, PipelineConfig, TrainerResources

__all__ = [
    "COHORTS",
    "GATED_CUTOFF",
    "RECALL_CUTOFFS",
    "create_pipeline",
    "eval_config",
]

RECALL_CUTOFFS = (10, 50, 100)
# Recall@K at this K decides the blessing.
GATED_CUTOFF = max(RECALL_CUTOFFS)
# The slices of the evaluation besides the overall one: feature -> values.
COHORTS = {
    features.USER_COHORT: ("returning", "new"),
    features.ITEM_COHORT: ("known", "new"),
}
_PER_MILLE = 1000


def eval_config(
    recall_floor: float, regression_tolerance: float
) -> tfma.EvalConfig:
    """Recall@K per cohort, and what a candidate must reach to be blessed.

    Each held-out pair is scored by the model's `score_catalogue` signature
    over every catalogue item; `transformed_labels` gives the column of the
    pair's item. `models.metrics.CatalogueRecall` counts the pairs whose
    item ranks within the top K. The same is computed for the baseline, the
    last blessed model, when there is one; a pair whose item the baseline
    does not know is a miss for it, and an unknown user gets its
    out-of-vocabulary treatment, so the two models need not share ids.

    Blessing needs Recall@100 at least `recall_floor` overall, and, when
    there is a baseline, no more than `regression_tolerance` below the
    baseline's overall and for returning users. TFX drops the change
    thresholds when no baseline is resolved: a first run is judged on the
    floor alone.
    """
    no_regression = tfma.MetricThreshold(
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -regression_tolerance},
        )
    )
    floor = tfma.MetricThreshold()
    floor.CopyFrom(no_regression)
    floor.value_threshold.lower_bound.value = recall_floor
    # A metric's own `threshold` would hold for every slice; these hold
    # for the overall slice and the returning users' alone.
    gates = [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec()], threshold=floor
        ),
        tfma.PerSliceMetricThreshold(
            slicing_specs=[
                tfma.SlicingSpec(
                    feature_values={features.USER_COHORT: "returning"}
                )
            ],
            threshold=no_regression,
        ),
    ]
    metrics = [
        tfma.MetricConfig(
            class_name="CatalogueRecall",
            module="models.metrics",
            config=json.dumps({"top_k": k}),
            per_slice_thresholds=gates if k == GATED_CUTOFF else [],
        )
        for k in RECALL_CUTOFFS
    ]
    metrics.append(tfma.MetricConfig(class_name="ExampleCount"))
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="score_catalogue",
                prediction_key="scores",
                label_key="catalogue_position",
            )
        ],
        slicing_specs=[tfma.SlicingSpec()]
        + [tfma.SlicingSpec(feature_keys=[name]) for name in COHORTS],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    """Builds the pipeline of one span (see `PipelineConfig`)."""
    range_config = None
    if config.span is not None:
        range_config = tfx.proto.RangeConfig(
            static_range=tfx.proto.StaticRange(
                start_span_number=config.span, end_span_number=config.span
            )
        )
    holdout = max(1, round(config.holdout_fraction * _PER_MILLE))
    schema_file = os.path.join(config.schema_dir, "schema.pbtxt")
    # The newest rows of the snapshot in time are held out: the Evaluator
    # judges on what comes after the training data, as serving will. The
    # span's files are checked first; a bad span stops the run there.
    example_gen = TemporalExampleGen(
        input_base=config.data_root,
        input_config=tfx.proto.Input(
            splits=[
                tfx.proto.Input.Split(name="snapshot", pattern=SPAN_PATTERN)
            ]
        ),
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[
                    tfx.proto.SplitConfig.Split(
                        name="train", hash_buckets=_PER_MILLE - holdout
                    ),
                    tfx.proto.SplitConfig.Split(
                        name="eval", hash_buckets=holdout
                    ),
                ],
                partition_feature_name="timestamp",
            )
        ),
        range_config=range_config,
        snapshot_checks={
            "schema_file": schema_file,
            "span_pattern": SPAN_PATTERN,
            **CheckConfig(
                max_growth=config.max_snapshot_growth,
                max_duplicate_fraction=config.max_duplicate_fraction,
                max_clock_skew_seconds=config.max_clock_skew_seconds,
            ).to_dict(),
        },
    )
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    )
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
    )
    anomaly_gate = AnomalyGate(
        anomalies=example_validator.outputs["anomalies"],
        examples=example_gen.outputs["examples"],
    )
    # The delta component writes an index of every snapshot it sees, each
    # pointing to the one before, and a run that gets to its end publishes
    # it; from the newest published one the delta finds the snapshot the
    # model in force was trained on. Only the latest-artifact and
    # latest-blessed-model strategies exist on Kubeflow v2 and Vertex,
    # hence this design. A run that fails publishes nothing: its rerun
    # resolves the same index and reuses what finished from the cache.
    previous_index = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        index=tfx.dsl.Channel(type=PublishedPairIndex),
    ).with_id("previous_index_resolver")
    # The last blessed model is the one the Pusher last pushed: the delta
    # is taken against its snapshot, the vocabularies grow from it and the
    # Trainer warm-starts from it.
    base_model = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing
        ),
    ).with_id("base_model_resolver")
    replay_ratio = config.replay_ratio
    if config.runtime_parameters:
        replay_ratio = tfx.dsl.experimental.RuntimeParameter(
            name="replay_ratio", ptype=float, default=config.replay_ratio
        )
    delta = InteractionDelta(
        examples=example_gen.outputs["examples"],
        previous_index=previous_index.outputs["index"],
        base_model=base_model.outputs["model"],
        replay_ratio=replay_ratio,
        num_shards=config.delta_shards,
        popularity_half_life_seconds=config.popularity_half_life_seconds,
    )
    # Anomalies stop the run before anything is diffed or trained.
    delta.add_upstream_node(anomaly_gate)
    changed_pairs = (
        delta.outputs["summary"].future()[0].custom_property("changed_pairs")
    )
    with tfx.dsl.Cond(changed_pairs >= config.min_delta_pairs):
        transform, trainer, evaluator, pusher = _training(
            config, example_gen, schema_gen, delta, base_model
        )
        # Last: the index of a run that trained is published once the
        # Pusher is done.
        publish = PublishIndex(index=delta.outputs["index"]).with_id(
            "PublishIndex"
        )
        publish.add_upstream_node(pusher)
    with tfx.dsl.Cond(changed_pairs < config.min_delta_pairs):
        publish_untrained = PublishIndex(index=delta.outputs["index"]).with_id(
            "PublishIndexUntrained"
        )
    metadata = None
    if config.metadata_path:
        metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        )
    return tfx.dsl.Pipeline(
        pipeline_name=config.name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            anomaly_gate,
            previous_index,
            delta,
            base_model,
            transform,
            trainer,
            evaluator,
            pusher,
            publish,
            publish_untrained,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata,
        beam_pipeline_args=list(config.beam_args),
    )


def _training(
    config: PipelineConfig,
    example_gen: tfx.components.CsvExampleGen,
    schema_gen: tfx.components.ImportSchemaGen,
    delta: InteractionDelta,
    base_model: tfx.dsl.Resolver,
) -> tuple[
    GrowingTransform,
    WarmStartTrainer,
    CheckedEvaluator,
    AtomicPusher,
]:
    """Transform, Trainer, Evaluator and Pusher: what a large delta runs."""
    transform = GrowingTransform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        base_model=base_model.outputs["model"],
        preprocessing_fn="models.features.preprocessing_fn",
        custom_config={
            "min_count": config.vocabulary_min_count,
            "oov_buckets": config.model.oov_buckets,
        },
        # Vocabularies come from the training rows alone. An id first seen
        # in the held-out rows would get a row that no training touches,
        # and the model would take its user for a known one; unregistered,
        # the user is unknown, as a brand-new user is in serving, and gets
        # the popularity list. The next span trains on those rows and
        # registers their ids.
        splits_config=tfx.proto.SplitsConfig(
            analyze=["train"], transform=["train", "eval"]
        ),
    )
    custom_config = {
        "model": config.model.to_dict(),
        "max_recall_cutoff": max(RECALL_CUTOFFS),
        "full_retrain": config.full_retrain,
        "full_retrain_every": config.full_retrain_every,
    }
    custom_executor_spec = None
    if config.vertex_training is not None:
        custom_config.update(_vertex_training_config(config))
        custom_executor_spec = executor_spec.ExecutorClassSpec(VertexExecutor)
    trainer = WarmStartTrainer(
        run_fn="models.trainer.run_fn",
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        base_model=base_model.outputs["model"],
        delta=delta.outputs["delta"],
        catalogue=delta.outputs["catalogue"],
        custom_config=custom_config,
        custom_executor_spec=custom_executor_spec,
    )
    resources = config.trainer_resources
    if resources is not None and config.vertex_training is None:
        trainer.with_platform_config(_resource_spec(resources))
    # A baseline whose SavedModel cannot be loaded is set aside: the
    # candidate is then judged on the floor alone.
    evaluator = CheckedEvaluator(
        examples=delta.outputs["holdout"],
        model=trainer.outputs["model"],
        baseline_model=base_model.outputs["model"],
        eval_config=eval_config(
            config.recall_floor, config.regression_tolerance
        ),
    ).with_id("Evaluator")
    # Each version is written beside the serving root's versions and
    # renamed into place; a snapshot already served is not pushed again.
    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        serving_root=config.serving_root,
        examples=example_gen.outputs["examples"],
    ).with_id("Pusher")
    return transform, trainer, evaluator, pusher


_ContainerSpec = (
    pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec
)


def _resource_spec(resources: TrainerResources) -> _ContainerSpec.ResourceSpec:
    """The Trainer container's requests, as Kubeflow v2 takes them."""
    spec = _ContainerSpec.ResourceSpec(
        cpu_limit=resources.cpu_limit,
        memory_limit=resources.memory_limit_gib,
    )
    if resources.accelerator_count:
        spec.accelerator.type = resources.accelerator_type
        spec.accelerator.count = resources.accelerator_count
    return spec


def _vertex_training_config(config: PipelineConfig) -> dict[str, Any]:
    """The custom config of TFX's Vertex training extension.

    One worker runs the pipeline's image with the configured machine and
    accelerators; the extension's executor submits it as a custom job and
    waits for it.
    """
    vertex = config.vertex_training
    resources = config.trainer_resources or TrainerResources()
    machine = {"machine_type": resources.machine_type}
    if resources.accelerator_count:
        machine["accelerator_type"] = resources.accelerator_type
        machine["accelerator_count"] = resources.accelerator_count
    return {
        vertex_constants.ENABLE_VERTEX_KEY: True,
        vertex_constants.VERTEX_REGION_KEY: vertex.region,
        vertex_trainer_executor.TRAINING_ARGS_KEY: {
            "project": vertex.project,
            "worker_pool_specs": [
                {
                    "machine_spec": machine,
                    "replica_count": 1,
                    "container_spec": {"image_uri": vertex.image},
                }
            ],
        },
    }

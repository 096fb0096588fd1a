"""The pipeline compiles for Kubeflow Pipelines v2 and Vertex, offline."""

import json
import socket

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.dsl.components.common import resolver

from kubeflow.__main__ import main
from kubeflow.runner import IMAGE_SCHEMA_DIR, compile_pipeline
from pipeline.config import (
    PROJECT_ROOT,
    PipelineConfig,
    TrainerResources,
    VertexTraining,
)
from pipeline.pipeline import create_pipeline

_ROOTS = {
    "data_root": "gs://bucket/data",
    "pipeline_root": "gs://bucket/root",
    "serving_root": "gs://bucket/serving",
}
# How Kubeflow v2 names the tasks of each resolver of the local pipeline.
_RESOLVER_TASKS = {
    "previous_index_resolver": {"previous_index_resolver"},
    "base_model_resolver": {
        "base_model_resolver-model-blessing-resolver",
        "base_model_resolver-model-resolver",
    },
}
# The task whose output the consumers of each resolver read.
_RESOLVER_OUTPUTS = {
    "previous_index_resolver": "previous_index_resolver",
    "base_model_resolver": "base_model_resolver-model-resolver",
}
_SUPPORTED_STRATEGIES = (
    tfx.dsl.experimental.LatestArtifactStrategy,
    tfx.dsl.experimental.LatestBlessedModelStrategy,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Compiling must not reach any host: any connection attempt fails."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while compiling: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _compile(tmp_path, **overrides) -> dict:
    config = PipelineConfig(
        **_ROOTS,
        schema_dir=IMAGE_SCHEMA_DIR,
        min_delta_pairs=500,
        **overrides,
    )
    path = compile_pipeline(config, "freshtower:test", str(tmp_path / "p.json"))
    with open(path) as f:
        return json.load(f)


def _tasks(job: dict) -> dict:
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def _producers(task: dict) -> set[str]:
    """The tasks whose outputs a task reads, and those it waits for."""
    producers = set(task.get("dependentTasks", []))
    for value in task.get("inputs", {}).get("artifacts", {}).values():
        producers.add(value["taskOutputArtifact"]["producerTask"])
    return producers


def test_the_job_parses_into_kfp_protos(tmp_path):
    job = _compile(tmp_path)

    parsed = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(
        job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec()
    )

    assert parsed.runtime_config.gcs_output_directory == "gs://bucket/root"
    assert spec.pipeline_info.name == "freshtower"
    assert spec.schema_version == "2.1.0"
    # replay_ratio can be set per run, with the config's value as default.
    parameters = spec.root.input_definitions.parameters
    assert list(parameters) == ["replay_ratio"]
    values = job["runtimeConfig"]["parameterValues"]
    assert values == {"replay_ratio": 1.0}


def test_every_local_component_is_there_and_wired_the_same(tmp_path):
    job = _compile(tmp_path)
    local = create_pipeline(PipelineConfig.local(tmp_path, tmp_path))

    tasks = _tasks(job)

    expected = set()
    for node in local.components:
        expected |= _RESOLVER_TASKS.get(node.id, {node.id})
    assert set(tasks) == expected
    for node in local.components:
        if node.id in _RESOLVER_TASKS:
            continue
        upstream = {
            _RESOLVER_OUTPUTS.get(parent.id, parent.id)
            for parent in node.upstream_nodes
        }
        assert _producers(tasks[node.id]) == upstream, node.id
    # Training and pushing run only when the delta is large enough.
    for name in ("GrowingTransform", "WarmStartTrainer", "Evaluator", "Pusher"):
        condition = tasks[name]["triggerPolicy"]["condition"]
        assert "metadata['changed_pairs'] < 500" in condition
    assert "triggerPolicy" not in tasks["InteractionDelta"]
    # The Evaluator judges the candidate on the delta's held-out rows,
    # against the last blessed model.
    evaluator = tasks["Evaluator"]["inputs"]["artifacts"]
    assert evaluator["examples"]["taskOutputArtifact"] == {
        "outputArtifactKey": "holdout",
        "producerTask": "InteractionDelta",
    }
    assert (
        evaluator["baseline_model"]["taskOutputArtifact"]["producerTask"]
        == "base_model_resolver-model-resolver"
    )
    # The snapshot is split by time by a CsvExampleGen subclass, which
    # Kubeflow v2 drives like any file-based ExampleGen.
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    container = executors["TemporalExampleGen_executor"]["container"]
    assert "components.temporal_split.Executor" in container["args"]
    driver = container["lifecycle"]["preCacheCheck"]["command"]
    assert "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver" in (
        driver
    )


def test_every_resolver_uses_a_strategy_kubeflow_v2_supports(tmp_path):
    local = create_pipeline(PipelineConfig.local(tmp_path, tmp_path))
    job = _compile(tmp_path)

    resolvers = [
        node for node in local.components if isinstance(node, tfx.dsl.Resolver)
    ]

    assert {node.id for node in resolvers} == set(_RESOLVER_TASKS)
    for node in resolvers:
        strategy = node.exec_properties[resolver.RESOLVER_STRATEGY_CLASS]
        assert strategy in _SUPPORTED_STRATEGIES, node.id
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    for names in _RESOLVER_TASKS.values():
        for name in names:
            label = _tasks(job)[name]["componentRef"]["name"]
            executor = job["pipelineSpec"]["components"][label]["executorLabel"]
            assert "resolver" in executors[executor], name


def test_the_trainer_container_asks_for_the_gpus(tmp_path):
    job = _compile(
        tmp_path,
        trainer_resources=TrainerResources(
            accelerator_type="nvidia.com/gpu",
            accelerator_count=2,
            cpu_limit=8,
            memory_limit_gib=30,
        ),
        beam_args=("--runner=DataflowRunner", "--region=us-central1"),
    )

    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    resources = executors["WarmStartTrainer_executor"]["container"]["resources"]
    assert resources == {
        "accelerator": {"type": "nvidia.com/gpu", "count": "2"},
        "cpuLimit": 8.0,
        "memoryLimit": 30.0,
    }
    # Only the Trainer asks for accelerators.
    for name, executor in executors.items():
        if name != "WarmStartTrainer_executor" and "container" in executor:
            assert "resources" not in executor["container"], name
    # The data components take the Beam options.
    args = executors["InteractionDelta_executor"]["container"]["args"]
    assert "--runner=DataflowRunner" in args


def test_on_vertex_the_trainer_runs_a_training_job_with_the_gpus(tmp_path):
    job = _compile(
        tmp_path,
        trainer_resources=TrainerResources(
            accelerator_type="NVIDIA_TESLA_T4",
            accelerator_count=1,
            machine_type="n1-highmem-8",
        ),
        vertex_training=VertexTraining(
            project="my-project", region="europe-west4", image="img:1"
        ),
    )

    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    container = executors["WarmStartTrainer_executor"]["container"]
    assert "components.warm_start_trainer.VertexExecutor" in container["args"]
    # The launcher itself needs no GPU; the job's worker pool has it.
    assert "resources" not in container
    parameters = _tasks(job)["WarmStartTrainer"]["inputs"]["parameters"]
    custom_config = json.loads(
        parameters["custom_config"]["runtimeValue"]["constant"]
    )
    assert custom_config["ai_platform_enable_vertex"] is True
    assert custom_config["ai_platform_vertex_region"] == "europe-west4"
    assert custom_config["ai_platform_training_args"] == {
        "project": "my-project",
        "worker_pool_specs": [
            {
                "machine_spec": {
                    "machine_type": "n1-highmem-8",
                    "accelerator_type": "NVIDIA_TESLA_T4",
                    "accelerator_count": 1,
                },
                "replica_count": 1,
                "container_spec": {"image_uri": "img:1"},
            }
        ],
    }
    # What the training job runs still gets the model's settings.
    assert custom_config["model"]["embedding_dim"] > 0


def test_the_command_line_compiles(tmp_path, capsys):
    output = tmp_path / "cli.json"

    code = main(
        [
            "compile",
            "--image=freshtower:1",
            "--pipeline-root=gs://b/root",
            "--data-root=gs://b/data",
            "--serving-root=gs://b/serving",
            "--gpu-type=nvidia.com/gpu",
            "--gpu-count=1",
            f"--output={output}",
        ]
    )

    assert code == 0
    job = json.loads(output.read_text())
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    trainer = executors["WarmStartTrainer_executor"]["container"]
    assert trainer["image"] == "freshtower:1"
    assert trainer["resources"]["accelerator"]["count"] == "1"
    # The schema is read inside the image.
    schema_gen = _tasks(job)["ImportSchemaGen"]["inputs"]["parameters"]
    assert schema_gen["schema_file"]["runtimeValue"]["constant"] == (
        f"{IMAGE_SCHEMA_DIR}/schema.pbtxt"
    )
    printed = capsys.readouterr().out
    assert f"Wrote {output}" in printed
    assert "1 x nvidia.com/gpu" in printed


def test_bad_resources_are_refused():
    with pytest.raises(ValueError, match="go together"):
        TrainerResources(accelerator_type="nvidia.com/gpu")
    with pytest.raises(ValueError, match="accelerator_count"):
        TrainerResources(accelerator_count=-1)


def test_the_image_holds_the_project_where_the_job_looks_for_it():
    root = PROJECT_ROOT
    dockerfile = (root / "Dockerfile").read_text().splitlines()
    workdir = next(
        line.split()[1] for line in dockerfile if line.startswith("WORKDIR")
    )
    copied = {
        line.split()[1] for line in dockerfile if line.startswith("COPY ")
    }

    # Every package the project installs (the tests are one, but are not
    # installed), the lock, and the schema at the path the compiled job
    # reads it from.
    packages = {p.parent.name for p in root.glob("*/__init__.py")} - {"tests"}
    assert packages <= copied
    assert {"requirements.lock", "schema"} <= copied
    assert f"{workdir}/schema" == IMAGE_SCHEMA_DIR
    assert any("--no-deps -r requirements.lock" in line for line in dockerfile)

"""The pipeline compiles for Kubeflow Pipelines v2, offline."""

import json

from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


def test_the_pipeline_compiles_for_kubeflow_v2_with_a_gs_root(tmp_path):
    config = PipelineConfig(
        data_root="gs://bucket/data",
        pipeline_root="gs://bucket/root",
        serving_root="gs://bucket/serving",
        min_delta_pairs=500,
    )
    output = tmp_path / "pipeline.json"
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image="freshtower:test"
        ),
        output_filename=str(output),
    )

    runner.run(create_pipeline(config))

    tasks = json.loads(output.read_text())["pipelineSpec"]["root"]["dag"][
        "tasks"
    ]
    assert {
        "InteractionDelta",
        "previous_index_resolver",
        # Kubeflow v2 resolves the last blessed model in two steps.
        "base_model_resolver-model-blessing-resolver",
        "base_model_resolver-model-resolver",
        "GrowingTransform",
        "WarmStartTrainer",
        "Pusher",
    } <= set(tasks)
    # Training and pushing run only when the delta is large enough.
    for name in ("GrowingTransform", "WarmStartTrainer", "Evaluator", "Pusher"):
        condition = tasks[name]["triggerPolicy"]["condition"]
        assert "metadata['changed_pairs'] < 500" in condition
    assert "triggerPolicy" not in tasks["InteractionDelta"]
    delta_inputs = tasks["InteractionDelta"]["inputs"]["artifacts"]
    assert (
        delta_inputs["previous_index"]["taskOutputArtifact"]["producerTask"]
        == "previous_index_resolver"
    )
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
    spec = json.loads(output.read_text())["pipelineSpec"]
    container = spec["deploymentSpec"]["executors"][
        "TemporalExampleGen_executor"
    ]["container"]
    assert "components.temporal_split.Executor" in container["args"]
    driver = container["lifecycle"]["preCacheCheck"]["command"]
    assert "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver" in (
        driver
    )

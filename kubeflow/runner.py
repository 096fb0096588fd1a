"""Compiles the freshtower pipeline for Kubeflow Pipelines v2 and Vertex.

The pipeline is the one the local runner runs (`pipeline.pipeline.
create_pipeline`); `KubeflowV2DagRunner` turns it into a pipeline job
JSON that a Kubeflow Pipelines v2 cluster or Vertex AI Pipelines runs.
Compiling only writes that file: it reads nothing from the pipeline root
and sends nothing anywhere, so it works offline for a `gs://` root.

Paths in the config are read where the components run, inside the
pipeline image: the schema defaults to where the Dockerfile puts it.
"""

from __future__ import annotations

import dataclasses
import os

from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline

__all__ = ["IMAGE_SCHEMA_DIR", "compile_pipeline"]

# Where the Dockerfile installs the project's schema in the image.
IMAGE_SCHEMA_DIR = "/opt/freshtower/schema"


def compile_pipeline(config: PipelineConfig, image: str, output: str) -> str:
    """Writes the pipeline job JSON of `config` to `output`.

    Args:
      config: the pipeline's config; its metadata path is dropped (the
        orchestrator keeps the metadata) and `replay_ratio` becomes a
        runtime parameter.
      image: the container image every component runs in.
      output: the JSON file to write.

    Returns:
      The path written.
    """
    if not image:
        raise ValueError("A container image is needed to compile.")
    config = dataclasses.replace(
        config, metadata_path=None, runtime_parameters=True
    )
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=True
        ),
        output_dir=directory,
        output_filename=os.path.basename(output),
    )
    runner.run(
        create_pipeline(config),
        parameter_values={"replay_ratio": config.replay_ratio},
    )
    return os.path.join(directory, os.path.basename(output))

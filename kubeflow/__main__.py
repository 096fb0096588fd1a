"""Command line for clusters: `python -m kubeflow {compile,submit}`.

    python -m kubeflow compile --image IMAGE --pipeline-root gs://B/root \\
        --data-root gs://B/data --serving-root gs://B/serving \\
        --gpu-type nvidia.com/gpu --gpu-count 1 --output pipeline.json
    python -m kubeflow submit --template pipeline.json --project P \\
        --region us-central1 --pipeline-root gs://B/root --dry-run

`compile` writes a Kubeflow Pipelines v2 job JSON offline; `submit` sends
it to Vertex AI Pipelines (see `kubeflow.vertex`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

__all__ = ["main"]


def _compile(args: argparse.Namespace) -> int:
    from kubeflow.runner import compile_pipeline
    from pipeline.config import (
        PipelineConfig,
        TrainerResources,
        VertexTraining,
    )

    resources = TrainerResources(
        accelerator_type=args.gpu_type or "",
        accelerator_count=args.gpu_count if args.gpu_type else 0,
        cpu_limit=args.cpu,
        memory_limit_gib=args.memory_gib,
        machine_type=args.machine_type,
    )
    vertex = None
    if args.target == "vertex":
        if not args.project:
            print("--target vertex needs --project.", file=sys.stderr)
            return 2
        vertex = VertexTraining(
            project=args.project, region=args.region, image=args.image
        )
    config = PipelineConfig(
        data_root=args.data_root,
        pipeline_root=args.pipeline_root,
        serving_root=args.serving_root,
        name=args.name,
        schema_dir=args.schema_dir,
        min_delta_pairs=args.min_delta_pairs,
        replay_ratio=args.replay_ratio,
        beam_args=tuple(args.beam_arg),
        trainer_resources=resources,
        vertex_training=vertex,
    )
    path = compile_pipeline(config, args.image, args.output)
    where = "a Vertex training job" if vertex else "its own container"
    gpus = (
        f"{resources.accelerator_count} x {resources.accelerator_type}"
        if resources.accelerator_count
        else "no accelerator"
    )
    print(f"Wrote {path}")
    print(f"  image    {args.image}")
    print(f"  root     {args.pipeline_root}")
    print(f"  trainer  {gpus}, in {where}")
    print(f"  beam     {' '.join(config.beam_args) or '(DirectRunner)'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    from kubeflow import vertex

    parser = argparse.ArgumentParser(
        prog="python -m kubeflow",
        description=__doc__.split("\n\n")[0],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compile_ = commands.add_parser(
        "compile", help="write the Kubeflow Pipelines v2 job JSON, offline"
    )
    compile_.add_argument("--image", required=True, help="pipeline image")
    compile_.add_argument("--pipeline-root", required=True)
    compile_.add_argument(
        "--data-root", required=True, help="folder of span-<N>/*.csv"
    )
    compile_.add_argument(
        "--serving-root", required=True, help="where blessed models go"
    )
    compile_.add_argument("--output", default="pipeline.json")
    compile_.add_argument("--name", default="freshtower")
    compile_.add_argument(
        "--target",
        choices=("kubeflow", "vertex"),
        default="kubeflow",
        help="kubeflow: the Trainer's container asks the cluster for the "
        "GPUs; vertex: the Trainer runs as a Vertex AI training job",
    )
    compile_.add_argument("--project", help="Vertex training job's project")
    compile_.add_argument("--region", default="us-central1")
    compile_.add_argument(
        "--gpu-type",
        help="accelerator: a Kubernetes resource (nvidia.com/gpu) for "
        "kubeflow, a Vertex name (NVIDIA_TESLA_T4) for vertex",
    )
    compile_.add_argument("--gpu-count", type=int, default=1)
    compile_.add_argument("--cpu", type=float, default=0.0)
    compile_.add_argument("--memory-gib", type=float, default=0.0)
    compile_.add_argument(
        "--machine-type",
        default="n1-standard-8",
        help="machine of the Vertex training job",
    )
    compile_.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        help="a Beam pipeline option of the data components, such as "
        "--beam-arg=--runner=DataflowRunner (repeatable)",
    )
    compile_.add_argument(
        "--schema-dir",
        default=None,
        help="folder of schema.pbtxt inside the image "
        "(default: where the Dockerfile puts it)",
    )
    compile_.add_argument("--min-delta-pairs", type=int, default=1)
    compile_.add_argument(
        "--replay-ratio",
        type=float,
        default=1.0,
        help="default of the replay_ratio runtime parameter",
    )
    compile_.set_defaults(func=_compile)
    vertex.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "schema_dir", "") is None:
        from kubeflow.runner import IMAGE_SCHEMA_DIR

        args.schema_dir = IMAGE_SCHEMA_DIR
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

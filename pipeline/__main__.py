"""Command line of freshtower.

    python -m pipeline generate --out data/ --spans 3
    python -m pipeline load --ratings ml-100k/ --format movielens-100k \\
        --out data/ --initial-fraction 0.5 --spans 5
    python -m pipeline run --data data/ --workdir work/ --span 2
    python -m pipeline demo --workdir demo/
    python -m pipeline backtest --ratings ml-100k/u.data \\
        --format movielens-100k --spans 5 --policy warm --policy full \\
        --out backtest/

Each run prints a line per component as it finishes and a short table per
span; the full TFX log goes to `<workdir>/logs/`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

# Before TensorFlow is imported anywhere: Keras 2 for TFRS, and no C++ log
# spam on the console.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The Google client libraries warn at import time about the Python version.
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

__all__ = ["main"]


def _log_to_file(workdir: Path, name: str) -> Path:
    """Sends absl and Python logging to a file instead of the console."""
    import logging

    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(file_handler)
    # TensorFlow's logger writes to the console through a handler of its
    # own; send its records to the file like the rest.
    import tensorflow as tf

    tf_logger = tf.get_logger()
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True
    # Warnings go to the same file instead of the console.
    logging.captureWarnings(True)
    return path


def _growth(size: int, training: dict, which: int) -> str:
    """A vocabulary's size, and what the warm start carried and added."""
    name = ("user_id", "item_id")[which]
    if training["mode"] != "warm":
        return f"{size:,} (all new: cold start)"
    return (
        f"{size:,} ({training['carried'][name]:,} carried, "
        f"{training['new'][name]:,} new)"
    )


def _print_report(report, config) -> None:
    from components.interaction_delta.executor import describe_summary
    from models.warm_start import describe
    from pipeline.evaluation import describe_evaluation

    delta = describe_summary(report.delta).splitlines()
    rows = [
        ("span", str(report.span)),
        ("rows in snapshot", f"{report.rows:,}"),
        ("delta", delta[0]),
        ("", delta[1]),
        ("", delta[2]),
    ]
    if report.trained:
        training = report.training
        rows += [
            ("user vocabulary", _growth(report.user_vocabulary, training, 0)),
            ("item vocabulary", _growth(report.item_vocabulary, training, 1)),
            ("training", describe(training)),
        ]
        evaluation = describe_evaluation(
            report.evaluation,
            config.recall_floor,
            config.regression_tolerance,
        )
        rows.append(("evaluation", evaluation[0]))
        rows += [("", line) for line in evaluation[1:]]
        rows.append(
            ("pushed model", report.pushed_model or "- (nothing pushed)")
        )
    else:
        rows.append(("trained", "no: the delta is below --min-delta-pairs"))
    rows.append(("wall time", f"{report.seconds:.0f} s"))
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print()


def _model_config(args):
    """The ModelConfig of `--retrieval` and the `--model-option`s.

    Raises:
      ValueError: an option names no field or holds a bad value.
    """
    import dataclasses

    from models.model import ModelConfig

    defaults = ModelConfig()
    values = {"retrieval": args.retrieval}
    for option in args.model_option or ():
        name, sep, text = option.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not hasattr(defaults, name):
            fields = ", ".join(f.name for f in dataclasses.fields(defaults))
            raise ValueError(
                f"--model-option {option!r}: expected NAME=VALUE with NAME "
                f"one of {fields}."
            )
        kind = type(getattr(defaults, name))
        try:
            if kind is bool and text.lower() not in ("true", "false"):
                raise ValueError(text)
            value = text.lower() == "true" if kind is bool else kind(text)
        except ValueError:
            wanted = {bool: "true or false", int: "a whole number"}
            raise ValueError(
                f"--model-option {option!r}: {text!r} is not "
                f"{wanted.get(kind, 'a number')}."
            ) from None
        values[name] = value
    try:
        return ModelConfig(**values)
    except ValueError as error:
        raise ValueError(f"--model-option: {error}") from None


def _run_spans(
    data: Path, workdir: Path, spans: Sequence[int | None], args
) -> int:
    from pipeline.config import PipelineConfig
    from pipeline.local import run_span

    try:
        model = _model_config(args)
    except ValueError as error:
        print(f"run: {error}", file=sys.stderr)
        return 2
    for span in spans:
        label = f"span-{span}" if span is not None else "latest"
        log = _log_to_file(workdir, label)
        print(
            f"Span {span if span is not None else '(latest)'}: running the "
            f"pipeline (log: {log})"
        )
        config = PipelineConfig.local(
            workdir,
            data,
            span=span,
            recall_floor=args.recall_floor,
            regression_tolerance=args.regression_tolerance,
            holdout_fraction=args.holdout_fraction,
            min_delta_pairs=args.min_delta_pairs,
            replay_ratio=args.replay_ratio,
            full_retrain=args.full_retrain,
            full_retrain_every=args.full_retrain_every,
            vocabulary_min_count=args.min_count,
            enable_cache=not args.no_cache,
            model=model,
        )
        try:
            report = run_span(config, printer=print)
        except Exception as error:  # noqa: BLE001 - the CLI reports and exits
            print(f"\nSpan {span}: the run failed: {error}", file=sys.stderr)
            print(f"Full log: {log}", file=sys.stderr)
            return 1
        _print_report(report, config)
    return 0


def _generate(args) -> int:
    from pipeline import synthetic

    config = synthetic.SyntheticConfig(seed=args.seed, num_spans=args.spans)
    paths = synthetic.write_history(args.out, config)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _load(args) -> int:
    from pipeline import movielens

    paths = movielens.write_movielens_spans(
        args.ratings,
        args.format,
        args.out,
        args.initial_fraction,
        args.spans,
    )
    for path in paths:
        print(f"wrote {path}")
    return 0


def _run(args) -> int:
    return _run_spans(Path(args.data), Path(args.workdir), [args.span], args)


def _demo(args) -> int:
    from pipeline import synthetic

    workdir = Path(args.workdir)
    data = workdir / "data"
    start = time.monotonic()
    config = synthetic.SyntheticConfig(seed=args.seed, num_spans=args.spans)
    synthetic.write_history(data, config)
    print(f"Generated {args.spans} synthetic spans under {data}")
    status = _run_spans(data, workdir, range(1, args.spans + 1), args)
    if status == 0:
        print(f"Demo finished in {time.monotonic() - start:.0f} s.")
    return status


def _backtest(args) -> int:
    from pipeline import backtest
    from pipeline.report import write_report

    out = Path(args.out)
    try:
        model = _model_config(args)
        source = backtest.Source(
            format=args.format,
            ratings=args.ratings,
            initial_fraction=args.initial_fraction,
            spans=args.spans,
            seed=args.seed,
        )
        for policy in args.policy:
            backtest.check_no_earlier_run(out, policy)
        data = backtest.prepare_data(source, out)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"backtest: {error}", file=sys.stderr)
        return 2
    print(f"Backtest of {source.describe()} into {out}")
    results = out / backtest.RESULTS_FILE
    for policy in dict.fromkeys(args.policy):
        log = _log_to_file(out, f"backtest-{policy}")
        print(f"Policy {policy} (log: {log})")
        start = time.monotonic()
        try:
            records = backtest.run_policy(
                policy,
                data,
                out,
                printer=print,
                holdout_fraction=args.holdout_fraction,
                min_delta_pairs=args.min_delta_pairs,
                replay_ratio=args.replay_ratio,
                vocabulary_min_count=args.min_count,
                model=model,
                recall_floor=args.recall_floor,
                regression_tolerance=args.regression_tolerance,
                enable_cache=not args.no_cache,
            )
        except Exception as error:  # noqa: BLE001 - the CLI reports and exits
            print(
                f"\nPolicy {policy}: the run failed: {error}", file=sys.stderr
            )
            print(f"Full log: {log}", file=sys.stderr)
            return 1
        merged = backtest.merge_records(results, records)
        report = write_report(
            merged, out / "report.html", source=source.describe()
        )
        print(
            f"Policy {policy} done in {time.monotonic() - start:.0f} s; "
            f"{results} and {report} updated."
        )
    print()
    for line in backtest.summary_table(merged):
        print(f"  {line}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Keep a two-tower retrieval model fresh with TFX.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser(
        "generate", help="write a seeded synthetic history, one dir per span"
    )
    generate.add_argument("--out", required=True, help="data root to write")
    generate.add_argument("--spans", type=int, default=3)
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(func=_generate)

    load = commands.add_parser(
        "load", help="cut MovieLens ratings into spans by time"
    )
    load.add_argument("--ratings", required=True, help="file or folder")
    load.add_argument(
        "--format",
        required=True,
        choices=["movielens-100k", "movielens-csv"],
    )
    load.add_argument("--out", required=True, help="data root to write")
    load.add_argument("--initial-fraction", type=float, default=0.5)
    load.add_argument("--spans", type=int, default=5)
    load.set_defaults(func=_load)

    def model_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--recall-floor",
            type=float,
            default=0.05,
            help="Recall@100 a model needs to be blessed (default: 0.05)",
        )
        command.add_argument(
            "--retrieval",
            choices=("brute_force", "scann"),
            default="brute_force",
            help="how the served model finds its top K: score every "
            "catalogue item, or search a ScaNN index (default: brute_force)",
        )
        command.add_argument(
            "--regression-tolerance",
            type=float,
            default=0.01,
            help="how far Recall@100 may fall below the last blessed "
            "model's, overall and for returning users (default: 0.01)",
        )
        command.add_argument(
            "--holdout-fraction",
            type=float,
            default=0.05,
            help="share of each snapshot, the newest rows, held out for "
            "evaluation (default: 0.05)",
        )
        command.add_argument(
            "--min-delta-pairs",
            type=int,
            default=1,
            help="skip training when fewer pairs changed (default: 1)",
        )
        command.add_argument(
            "--replay-ratio",
            type=float,
            default=1.0,
            help="unchanged pairs replayed per changed pair (default: 1)",
        )
        command.add_argument(
            "--min-count",
            type=int,
            default=1,
            help="interactions a new id needs for its own vocabulary row "
            "(default: 1)",
        )
        command.add_argument(
            "--model-option",
            action="append",
            metavar="NAME=VALUE",
            help="set a field of models.model.ModelConfig, e.g. "
            "warm_epochs=2; repeat for several",
        )
        command.add_argument(
            "--no-cache", action="store_true", help="rerun every component"
        )

    def run_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--workdir",
            default="work",
            help="pipeline root, metadata and serving models (default: work)",
        )
        command.add_argument(
            "--full-retrain",
            action="store_true",
            help="train from scratch on the whole snapshot",
        )
        command.add_argument(
            "--full-retrain-every",
            type=int,
            default=0,
            help="spans whose number is a multiple of N retrain from "
            "scratch (default: 0, never)",
        )
        model_options(command)

    run = commands.add_parser("run", help="run the pipeline on one span")
    run.add_argument("--data", required=True, help="data root with span-<N>/")
    run.add_argument(
        "--span", type=int, default=None, help="span number (default: newest)"
    )
    run_options(run)
    run.set_defaults(func=_run)

    demo = commands.add_parser(
        "demo", help="generate synthetic spans and run them one after another"
    )
    demo.add_argument("--spans", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    run_options(demo)
    demo.set_defaults(func=_demo, workdir="demo")

    from pipeline.backtest import FORMATS, POLICIES

    backtest = commands.add_parser(
        "backtest",
        help="replay a history span by span under retraining policies and "
        "report what each would have cost and earned",
    )
    backtest.add_argument(
        "--ratings",
        help="ratings file or folder (u.data with u.item beside it, or "
        "ratings.csv with movies.csv beside it); not for synthetic",
    )
    backtest.add_argument("--format", required=True, choices=FORMATS)
    backtest.add_argument(
        "--initial-fraction",
        type=float,
        default=0.5,
        help="share of the history in span 1 (default: 0.5)",
    )
    backtest.add_argument(
        "--spans",
        type=int,
        default=5,
        help="spans after the first, each scored on the next (default: 5)",
    )
    backtest.add_argument(
        "--policy",
        action="append",
        required=True,
        choices=POLICIES,
        help="retraining policy; repeat to run several",
    )
    backtest.add_argument(
        "--out", required=True, help="folder for the data, runs and report"
    )
    backtest.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic history"
    )
    model_options(backtest)
    backtest.set_defaults(func=_backtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit status."""
    args = _parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

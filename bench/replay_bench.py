"""Benchmark: warm starts against full retrains, replayed span by span.

The local pipeline runs over a history cut into spans, once with warm
starts (the default) and once with a full retrain from scratch at every
span. The model each run serves (the last pushed one) is scored on the
next span's new interactions, the pairs that span adds: Recall@10/50/100
over all of them and over those of returning users (users of the span the
model was trained on). A recency-weighted popularity list of the training
span is scored the same way. Printed per span and on average, with the
training seconds and examples of each policy and the ratios warm/full.

    python bench/replay_bench.py                       # synthetic history
    python bench/replay_bench.py --movielens PATH/ml-100k --spans 5

Figures go to stdout and to `<workdir>/replay.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from pipeline import movielens, snapshots, synthetic  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.local import run_span  # noqa: E402

CUTOFFS = (10, 50, 100)
_HALF_LIFE = PipelineConfig.popularity_half_life_seconds


def _new_pairs(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The rows of `after` whose (user, item) pair `before` lacks."""
    merged = after.merge(
        before[["user_id", "item_id"]], how="left", indicator=True
    )
    return after[(merged["_merge"] == "left_only").to_numpy()]


def _recall(lists: dict[str, list[str]], held: pd.DataFrame) -> dict:
    hits = {k: 0 for k in CUTOFFS}
    for user, item in held[["user_id", "item_id"]].itertuples(index=False):
        ranked = lists[user]
        for k in CUTOFFS:
            hits[k] += item in ranked[:k]
    return {k: hits[k] / max(len(held), 1) for k in CUTOFFS}


def _model_lists(model_dir: str, users: pd.DataFrame) -> dict:
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    lists = {}
    for start in range(0, len(users), 1024):
        chunk = users.iloc[start : start + 1024]
        result = serve(
            user_id=tf.constant(chunk["user_id"].tolist()),
            user_age=tf.constant(chunk["user_age"].tolist(), tf.int64),
            user_occupation=tf.constant(chunk["user_occupation"].tolist()),
        )
        for user, items in zip(
            chunk["user_id"], result["item_ids"].numpy(), strict=True
        ):
            lists[user] = [i.decode() for i in items]
    return lists


def _popularity(snapshot: pd.DataFrame) -> list[str]:
    weights = np.exp2(
        (snapshot["timestamp"] - snapshot["timestamp"].max()) / _HALF_LIFE
    )
    ranked = weights.groupby(snapshot["item_id"]).sum()
    ranked = ranked.sort_values(ascending=False, kind="mergesort")
    return ranked.index[: max(CUTOFFS)].tolist()


def _score(lists: dict, held: pd.DataFrame, returning: set) -> dict:
    back = held[held["user_id"].isin(returning)]
    return {
        "all": _recall(lists, held),
        "returning": _recall(lists, back),
        "pairs": len(held),
        "returning_pairs": len(back),
    }


def _run_policy(
    name: str, data: Path, workdir: Path, spans: list[int], **config
) -> dict[int, dict]:
    results = {}
    served = None
    for span in spans:
        start = time.monotonic()
        report = run_span(
            PipelineConfig.local(workdir / name, data, span=span, **config)
        )
        served = report.pushed_model or served
        training = report.training or {}
        results[span] = {
            "model": served,
            "train_seconds": training.get("seconds", 0.0),
            "examples": training.get("examples", 0),
            "mode": training.get("mode"),
            "wall_seconds": time.monotonic() - start,
            "blessed": report.blessed,
        }
        print(
            f"  {name:<5} span {span}: {training.get('mode')} start, "
            f"{training.get('examples', 0):,} examples, "
            f"{training.get('seconds', 0.0):.1f} s training, "
            f"{'pushed' if report.pushed_model else 'not pushed'} "
            f"({time.monotonic() - start:.0f} s)",
            flush=True,
        )
    return results


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movielens", help="MovieLens 100K folder")
    parser.add_argument("--spans", type=int, default=5)
    parser.add_argument("--initial-fraction", type=float, default=0.5)
    parser.add_argument("--workdir", default="bench-replay")
    args = parser.parse_args(argv)
    absl_logging.set_verbosity(absl_logging.WARNING)

    workdir = Path(args.workdir)
    data = workdir / "data"
    if args.movielens:
        movielens.write_movielens_spans(
            args.movielens,
            "movielens-100k",
            data,
            initial_fraction=args.initial_fraction,
            num_spans=args.spans,
        )
        source = f"MovieLens at {args.movielens}"
    else:
        synthetic.write_history(
            data, synthetic.SyntheticConfig(seed=0, num_spans=args.spans)
        )
        source = "synthetic history (seed 0)"
    spans = snapshots.list_spans(data)
    trained = spans[:-1]
    print(f"{source}: spans {spans}; training on {trained}", flush=True)

    warm = _run_policy("warm", data, workdir, trained)
    # Span 1 has no base model under either policy: the full policy reuses
    # the warm policy's cold start there.
    full = {trained[0]: warm[trained[0]]}
    full.update(
        _run_policy("full", data, workdir, trained[1:], full_retrain=True)
    )

    rows = []
    for span in trained:
        before = snapshots.read_span(data, span)
        after = snapshots.read_span(data, span + 1)
        held = _new_pairs(before, after)
        returning = set(before["user_id"])
        users = held.drop_duplicates("user_id")
        popular = _popularity(before)
        row = {
            "span": span,
            "popularity": _score(
                {u: popular for u in users["user_id"]}, held, returning
            ),
        }
        for policy, results in (("warm", warm), ("full", full)):
            lists = _model_lists(results[span]["model"], users)
            row[policy] = {
                **_score(lists, held, returning),
                **{k: v for k, v in results[span].items() if k != "model"},
            }
        rows.append(row)

    _print(rows)
    (workdir / "replay.json").write_text(json.dumps(rows, indent=2))


def _print(rows: list[dict]) -> None:
    header = (
        f"{'span':>4} {'policy':<10} {'R@10':>6} {'R@50':>6} {'R@100':>6} "
        f"{'ret R@100':>9} {'train s':>8} {'examples':>9}"
    )
    print("\nRecall on the next span's new pairs\n" + header)
    for row in rows:
        for policy in ("warm", "full", "popularity"):
            r = row[policy]
            train = (
                f"{r['train_seconds']:8.1f} {r['examples']:9,}"
                if policy != "popularity"
                else f"{'':8} {'':9}"
            )
            print(
                f"{row['span']:>4} {policy:<10} "
                + " ".join(f"{r['all'][k]:6.3f}" for k in CUTOFFS)
                + f" {r['returning'][100]:9.3f} {train}"
            )
    later = rows[1:] or rows

    def mean(policy, key, sub=None):
        values = [
            (r[policy][key][sub] if sub else r[policy][key]) for r in later
        ]
        return float(np.mean(values))

    print("\nMean over the spans after the first (warm starts only there):")
    for policy in ("warm", "full", "popularity"):
        print(
            f"  {policy:<10} R@10 {mean(policy, 'all', 10):.3f}  "
            f"R@50 {mean(policy, 'all', 50):.3f}  "
            f"R@100 {mean(policy, 'all', 100):.3f}  "
            f"returning R@100 {mean(policy, 'returning', 100):.3f}"
        )
    warm_r, full_r = mean("warm", "all", 100), mean("full", "all", 100)
    warm_s = mean("warm", "train_seconds")
    full_s = mean("full", "train_seconds")
    print(
        f"  warm/full: R@100 {warm_r / max(full_r, 1e-9):.2f}, training "
        f"seconds {warm_s / max(full_s, 1e-9):.2f}, examples "
        f"{mean('warm', 'examples') / max(mean('full', 'examples'), 1):.2f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

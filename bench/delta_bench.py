"""Benchmark: InteractionDelta's executor against a plain pandas join.

Two snapshots of `--pairs` pairs where `--churn` of the pairs change (two
fifths added, two fifths removed, one fifth re-rated). The executor runs on
Beam's DirectRunner with `--workers` processes, reading the new snapshot as
TFRecord examples (what ExampleGen hands it) and the previous one as the
pair index its first run wrote. The reference reads both snapshots from
CSV with pandas and classifies the pairs with one outer merge. Both are
timed in the same process and must agree on every count.

    python bench/delta_bench.py [--pairs 1000000] [--churn 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from components.interaction_delta import testing  # noqa: E402
from components.interaction_delta.diff import KEY  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402

_HOLDOUT = PipelineConfig.holdout_fraction


def _snapshots(
    pairs: int, churn: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    num_users, num_items = max(pairs // 50, 1), max(pairs // 250, 1)
    # Oversample, then keep the first `pairs` distinct pairs.
    codes = rng.integers(0, num_users * num_items, int(pairs * 1.3))
    codes = pd.unique(codes)[: int(pairs * (1 + churn))]
    users, items = np.divmod(codes, num_items)
    frame = pd.DataFrame(
        {
            "user_id": np.char.add("u", users.astype(str)).astype(object),
            "item_id": np.char.add("i", items.astype(str)).astype(object),
            "rating": rng.integers(1, 6, len(codes)).astype(np.float64),
            "timestamp": 1_600_000_000 + rng.integers(0, 10**7, len(codes)),
            "item_genres": "Drama|Comedy",
            "item_year": 1990 + items % 30,
            "user_age": 18 + users % 50,
            "user_occupation": "other",
        }
    )
    moved = int(pairs * churn * 0.4)
    modified = int(pairs * churn * 0.2)
    previous = frame.iloc[:pairs].reset_index(drop=True)
    current = pd.concat(
        [frame.iloc[moved:pairs], frame.iloc[pairs : pairs + moved]],
        ignore_index=True,
    )
    rerated = current.index[:modified]
    current.loc[rerated, "rating"] = 6.0 - current.loc[rerated, "rating"]
    current.loc[rerated[current.loc[rerated, "rating"] == 3.0], "rating"] = 4.0
    return previous, current


def _pandas_delta(previous_csv: str, current_csv: str) -> dict[str, int]:
    previous = pd.read_csv(previous_csv)
    current = pd.read_csv(current_csv)
    current = current.sort_values(KEY + ["timestamp"]).drop_duplicates(
        KEY, keep="last"
    )
    joined = current.merge(
        previous, on=KEY, how="outer", indicator=True, suffixes=("", "_old")
    )
    both = joined["_merge"] == "both"
    modified = both & (joined["rating"] != joined["rating_old"])
    return {
        "added": int((joined["_merge"] == "left_only").sum()),
        "removed": int((joined["_merge"] == "right_only").sum()),
        "modified": int(modified.sum()),
        "unchanged": int((both & ~modified).sum()),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--churn", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    previous, current = _snapshots(args.pairs, args.churn, args.seed)
    beam_args = [
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={args.workers}",
    ]
    with tempfile.TemporaryDirectory() as root:
        csvs = []
        for name, frame in (("previous", previous), ("current", current)):
            csvs.append(os.path.join(root, f"{name}.csv"))
            frame.to_csv(csvs[-1], index=False)
        # As the pipeline splits a snapshot by default: the newest 5% of
        # the rows held out for evaluation.
        shares = (1 - _HOLDOUT, _HOLDOUT)
        first = testing.write_examples(
            previous, os.path.join(root, "a"), 1, shares=shares
        )
        second = testing.write_examples(
            current, os.path.join(root, "b"), 2, shares=shares
        )
        print(
            f"{len(previous):,} and {len(current):,} pairs, churn "
            f"{args.churn:.0%}, DirectRunner with {args.workers} workers"
        )

        # The pipeline's defaults.
        settings = {
            "num_shards": PipelineConfig.delta_shards,
            "replay_ratio": PipelineConfig.replay_ratio,
        }
        start = time.perf_counter()
        outputs = testing.run_executor(
            first, [], os.path.join(root, "run-1"), beam_args, **settings
        )
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        outputs = testing.run_executor(
            second,
            outputs["index"],
            os.path.join(root, "run-2"),
            beam_args,
            **settings,
        )
        delta_seconds = time.perf_counter() - start
        summary = testing.read_summary(outputs)

        start = time.perf_counter()
        reference = _pandas_delta(*csvs)
        pandas_seconds = time.perf_counter() - start

    counts = {k: summary["pairs"][k] for k in reference}
    if counts != reference:
        raise SystemExit(
            f"Counts differ: executor {counts}, pandas {reference}"
        )
    pairs = len(previous) + len(current)
    print(json.dumps(counts))
    print(f"{'':24}{'seconds':>9}{'pairs/s':>12}")
    for name, seconds in (
        ("executor, first run", first_seconds),
        ("executor, delta run", delta_seconds),
        ("pandas join", pandas_seconds),
    ):
        print(f"{name:24}{seconds:9.1f}{pairs / seconds:12,.0f}")
    print(
        f"executor/pandas time ratio {delta_seconds / pandas_seconds:.2f} "
        f"(goal: executor under 60 s: "
        f"{'met' if delta_seconds < 60 else 'NOT met'})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

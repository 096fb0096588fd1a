"""Benchmark: warm starts against full retrains, replayed span by span.

Runs the backtest (`pipeline.backtest`) with the warm, full and popularity
policies over the same spans, then prints per span and on average
Recall@10/50/100 on the next span (overall, returning users, new users,
new items), training seconds and examples, and the ratios warm/full;
training seconds are also split into the first step, which builds the
training graph once per model, and the other steps.

    python bench/replay_bench.py                       # synthetic history
    python bench/replay_bench.py --movielens PATH/ml-100k --spans 5

Records and the report go to `<workdir>/backtest.json` and
`<workdir>/report.html`, as with `python -m pipeline backtest`; a workdir
that holds an earlier run is refused (its models would seed this one).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import logging as absl_logging  # noqa: E402

from pipeline import backtest  # noqa: E402
from pipeline.report import write_report  # noqa: E402

POLICIES = ("warm", "full", "popularity")


def _recall(record: dict, slice_name: str, k: str = "100") -> float | None:
    return record["metrics"][slice_name]["recall"][k]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movielens", help="MovieLens 100K folder")
    parser.add_argument("--spans", type=int, default=5)
    parser.add_argument("--initial-fraction", type=float, default=0.5)
    parser.add_argument("--workdir", default="bench-replay")
    args = parser.parse_args(argv)
    absl_logging.set_verbosity(absl_logging.WARNING)

    out = Path(args.workdir)
    source = backtest.Source(
        format="movielens-100k" if args.movielens else "synthetic",
        ratings=args.movielens,
        initial_fraction=args.initial_fraction,
        spans=args.spans,
    )
    data = backtest.prepare_data(source, out)
    print(f"{source.describe()}: spans {backtest.snapshots.list_spans(data)}")
    runs = {}
    for policy in POLICIES:
        runs[policy] = backtest.run_policy(
            policy, data, out, printer=lambda line: print(line, flush=True)
        )
        merged = backtest.merge_records(
            out / backtest.RESULTS_FILE, runs[policy]
        )
    write_report(merged, out / "report.html", source=source.describe())

    print(
        f"\n{'span':>4} {'policy':<10} {'R@10':>6} {'R@50':>6} {'R@100':>6} "
        f"{'return.':>7} {'new usr':>7} {'new itm':>7} {'train s':>8} "
        f"{'examples':>9}"
    )
    for i, span in enumerate(r["span"] for r in runs["warm"]):
        for policy in POLICIES:
            r = runs[policy][i]
            cells = [_recall(r, "all", k) for k in ("10", "50", "100")] + [
                _recall(r, s) for s in ("returning", "new_users", "new_items")
            ]
            print(
                f"{span:>4} {policy:<10} "
                + " ".join(
                    f"{'-' if c is None else f'{c:.3f}':>{6 if j < 3 else 7}}"
                    for j, c in enumerate(cells)
                )
                + f" {r['train_seconds']:8.1f} {r['examples']:9,}"
            )
    means = backtest.policy_means(merged)
    print("\nMean over the spans after the first (span 1 is a cold start):")
    for policy in POLICIES:
        m = means[policy]
        print(
            f"  {policy:<10} R@100 {m['all@100']:.3f}  returning "
            f"{m['returning@100']:.3f}  new users {m['new_users@100']:.3f}"
            f"  new items {m['new_items@100']:.3f}"
        )

    def ratio(key: str) -> float:
        return means["warm"][key] / means["full"][key]

    print(
        f"  warm/full: R@100 {ratio('all@100'):.2f}, returning "
        f"{ratio('returning@100'):.2f}, new items {ratio('new_items@100'):.2f}"
    )
    steps = {
        p: means[p]["train_seconds"] - means[p]["first_step_seconds"]
        for p in ("warm", "full")
    }
    print(
        f"  warm/full: training seconds {ratio('train_seconds'):.2f} "
        f"(first step {ratio('first_step_seconds'):.2f}, the other steps "
        f"{steps['warm'] / steps['full']:.2f}), examples "
        f"{ratio('examples'):.2f}, example passes "
        f"{ratio('example_passes'):.2f}"
    )
    print(
        "  (The first step builds the training graph: each new model pays "
        "it once,\n  whatever its training set; the other steps grow with "
        "the passes over the data.)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

"""Benchmark: the first training step of a fresh process, with and without
AutoGraph.

Every Trainer run is a new process, so whatever the first step of `fit`
costs is paid once per run, warm start or full retrain alike. The model's
step is traced as plain Python (see `models.model`), once, and compiled as
the Trainer compiles it (`models.model.compile_model`); the reference is
the same model trained the stock TFRS way, through `tfrs.tasks.Retrieval`
and `tfrs.Model`'s own steps, which AutoGraph converts. Each run is a fresh
Python process; both train the same random batches from the same seed and
must end on the same loss.

    python bench/trace_bench.py [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_VARIANTS = ("freshtower", "tfrs-autograph")
_USERS, _ITEMS, _BATCH = 2_000, 1_000, 512


def _child(variant: str, steps: int) -> dict[str, float]:
    """Trains `steps` batches in this process; returns its timings."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from models import features
    from models.model import ModelConfig, TwoTowerModel, compile_model
    from models.trainer import _build, _EpochLog

    class StockTfrs(TwoTowerModel):
        """The loss through TFRS's task; TFRS's steps, with AutoGraph."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.task = tfrs.tasks.Retrieval()

        def compute_loss(self, inputs, training=False):
            probability = tf.exp(
                tf.gather(self.item_log_frequency, inputs["item_index"])
            )
            return self.task(
                self.user_tower(inputs),
                self.item_tower(inputs),
                candidate_sampling_probability=probability,
                compute_metrics=not training,
            )

        train_step = tfrs.Model.train_step
        test_step = tfrs.Model.test_step

    rng = np.random.default_rng(0)
    rows = steps * _BATCH
    data = {
        "user_index": rng.integers(0, _USERS, rows),
        "user_age_bucket": rng.integers(
            0, len(features.AGE_BOUNDARIES) + 1, rows
        ),
        "user_occupation_index": rng.integers(
            0, features.OCCUPATION_BUCKETS, rows
        ),
        "item_index": rng.integers(0, _ITEMS, rows),
        "item_year_bucket": rng.integers(
            0, len(features.YEAR_BOUNDARIES) + 1, rows
        ),
        "item_genres": rng.integers(
            0, 2, (rows, features.GENRE_BUCKETS)
        ).astype(np.float32),
    }
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(_BATCH).cache()
    for _ in dataset:
        pass
    tf.keras.utils.set_random_seed(0)
    model_class = TwoTowerModel if variant == "freshtower" else StockTfrs
    model = model_class(_USERS, _ITEMS, ModelConfig())
    model.set_item_frequencies(
        np.bincount(data["item_index"], minlength=_ITEMS)
    )
    if variant == "freshtower":
        _build(model, next(iter(dataset)))
        compile_model(model)
    else:
        model.compile(
            optimizer=tf.keras.optimizers.Adagrad(0.1, jit_compile=False)
        )
    log = _EpochLog()
    start = time.monotonic()
    history = model.fit(dataset, epochs=1, verbose=0, callbacks=[log])
    return {
        "first_step": log.first_step_seconds,
        "fit": time.monotonic() - start,
        "loss": float(history.history["loss"][-1]),
    }


def _run(variant: str, steps: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", variant, f"--steps={steps}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.steps)))
        return

    runs = {variant: [] for variant in _VARIANTS}
    for repeat in range(args.repeats):
        # Alternated, so that a slower stretch of the machine hits both.
        for variant in _VARIANTS:
            runs[variant].append(_run(variant, args.steps))
            print(
                f"run {repeat + 1} {variant:<15} first step "
                f"{runs[variant][-1]['first_step']:6.2f} s, fit "
                f"{runs[variant][-1]['fit']:6.2f} s",
                flush=True,
            )
    losses = {runs[v][0]["loss"] for v in _VARIANTS}
    if max(losses) - min(losses) > 1e-3 * max(abs(x) for x in losses):
        sys.exit(f"The two variants trained to different losses: {losses}")

    def median(variant: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[variant])

    print(
        f"\n{args.steps} steps of {_BATCH}, median of {args.repeats} fresh "
        "processes each:"
    )
    for key, label in (("first_step", "first step"), ("fit", "whole fit")):
        ours, stock = median("freshtower", key), median("tfrs-autograph", key)
        print(
            f"  {label:<11} freshtower {ours:6.2f} s   stock TFRS "
            f"{stock:6.2f} s   ratio {ours / stock:.2f}"
        )


if __name__ == "__main__":
    main()

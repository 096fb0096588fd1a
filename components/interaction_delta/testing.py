"""Runs InteractionDelta's executor outside a pipeline, for tests and bench.

`write_examples` lays a frame out as an Examples artifact the way
ExampleGen does; `run_executor` calls the executor with fresh output
artifacts; `read_summary` and `read_delta` read what it wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from components.artifacts import DeltaSummary, ItemCatalogue, PairIndex
from components.interaction_delta import executor

__all__ = [
    "read_delta",
    "read_holdout",
    "read_summary",
    "run_executor",
    "write_examples",
]


def write_examples(
    frame: pd.DataFrame,
    uri: str,
    span: int,
    splits: Sequence[str] = ("train", "eval"),
    shares: Sequence[float] | None = None,
) -> standard_artifacts.Examples:
    """Writes `frame` as gzipped tf.Examples, its rows cut into splits.

    Args:
      frame: rows with the snapshot's columns.
      uri: the artifact's folder.
      span: the artifact's span.
      splits: the split names, in row order.
      shares: each split's share of the rows, in order; equal by default.
    """
    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    artifact.span = span
    artifact.split_names = artifact_utils.encode_split_names(list(splits))
    if shares is None:
        parts = np.array_split(np.arange(len(frame)), len(splits))
    else:
        ends = np.rint(np.cumsum(shares) / np.sum(shares) * len(frame))
        parts = np.split(np.arange(len(frame)), ends[:-1].astype(int))
    for split, rows in zip(splits, parts, strict=True):
        split_dir = os.path.join(uri, f"Split-{split}")
        tf.io.gfile.makedirs(split_dir)
        path = os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, "GZIP") as writer:
            for record in executor.encode_examples(frame.iloc[rows]):
                writer.write(record)
    return artifact


def run_executor(
    examples: standard_artifacts.Examples,
    previous_index: list[PairIndex],
    out_dir: str,
    beam_args: Sequence[str] = (),
    replay_ratio: float = 1.0,
    num_shards: int = 4,
    half_life_seconds: int = 7 * 24 * 3600,
    held_out_splits: Sequence[str] = ("eval",),
    base_model: Sequence[standard_artifacts.Model] = (),
) -> dict[str, list[Any]]:
    """Runs the executor once; returns its output artifacts by name."""
    outputs: dict[str, list[Any]] = {}
    for name, artifact_type in (
        ("delta", standard_artifacts.Examples),
        ("summary", DeltaSummary),
        ("catalogue", ItemCatalogue),
        ("index", PairIndex),
        ("holdout", standard_artifacts.Examples),
    ):
        artifact = artifact_type()
        artifact.uri = os.path.join(out_dir, name)
        tf.io.gfile.makedirs(artifact.uri)
        outputs[name] = [artifact]
    context = executor.Executor.Context(
        beam_pipeline_args=list(beam_args), tmp_dir=os.path.join(out_dir, "tmp")
    )
    executor.Executor(context).Do(
        {
            "examples": [examples],
            "previous_index": list(previous_index),
            "base_model": list(base_model),
        },
        outputs,
        {
            "replay_ratio": replay_ratio,
            "num_shards": num_shards,
            "popularity_half_life_seconds": half_life_seconds,
            "held_out_splits": json.dumps(list(held_out_splits)),
        },
    )
    return outputs


def read_summary(outputs: dict[str, list[Any]]) -> dict[str, Any]:
    """The `summary.json` of a run."""
    path = os.path.join(outputs["summary"][0].uri, executor.SUMMARY_FILE)
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_delta(outputs: dict[str, list[Any]]) -> dict[str, pd.DataFrame]:
    """The rows of each delta split, sorted by pair."""
    delta = outputs["delta"][0]
    frames = {}
    for split in executor.DELTA_SPLITS:
        split_dir = artifact_utils.get_split_uri([delta], split)
        records = []
        for path in sorted(tf.io.gfile.glob(os.path.join(split_dir, "*"))):
            dataset = tf.data.TFRecordDataset(path, compression_type="GZIP")
            records.extend(dataset.as_numpy_iterator())
        frame = (
            executor.decode_examples(records, split_dir, 0)
            if records
            else executor.empty_rows()
        )
        frames[split] = frame.sort_values(["user_id", "item_id"]).reset_index(
            drop=True
        )
    return frames


def read_holdout(outputs: dict[str, list[Any]]) -> pd.DataFrame:
    """The held-out rows with their cohorts, sorted by pair."""
    holdout = outputs["holdout"][0]
    split_dir = artifact_utils.get_split_uri([holdout], executor.HOLDOUT_SPLIT)
    spec = {
        name: tf.io.FixedLenFeature([], tf.string)
        for name in (
            "user_id",
            "item_id",
            executor.USER_COHORT,
            executor.ITEM_COHORT,
        )
    }
    columns: dict[str, list[str]] = {name: [] for name in spec}
    files = sorted(tf.io.gfile.glob(os.path.join(split_dir, "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    for batch in dataset.batch(1024).map(
        lambda s: tf.io.parse_example(s, spec)
    ):
        for name in spec:
            columns[name] += [v.decode() for v in batch[name].numpy()]
    frame = pd.DataFrame(columns)
    return frame.sort_values(["user_id", "item_id"]).reset_index(drop=True)

"""Feature names and the tf.Transform preprocessing of a snapshot.

Raw snapshot columns (see `pipeline.snapshots`) become these model inputs:

- `user_index`, `item_index`: [batch] int64 positions in the user and item
  vocabularies, which only grow (see `preprocessing_fn`); ids outside the
  vocabulary share `oov_buckets` hashed buckets after its last index.
- `user_age_bucket`, `item_year_bucket`: [batch] int64 fixed-boundary
  buckets; bucket 0 holds "unknown" (a stored 0).
- `user_occupation_index`: [batch] int64 vocabulary position.
- `item_genres`: [batch, GENRE_BUCKETS] float32 multi-hot genres.
- `timestamp`: [batch] int64 seconds since epoch, passed through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

__all__ = [
    "AGE_BOUNDARIES",
    "GENRE_BUCKETS",
    "HELD_OUT",
    "ITEM_COHORT",
    "ITEM_ID",
    "ITEM_VOCABULARY",
    "OCCUPATION_BUCKETS",
    "RAW_ITEM_FEATURES",
    "RAW_USER_FEATURES",
    "USER_COHORT",
    "USER_ID",
    "USER_VOCABULARY",
    "YEAR_BOUNDARIES",
    "preprocessing_fn",
    "read_vocabulary",
]

# Feature of InteractionDelta's examples: 1 for a pair of a held-out split,
# which the Trainer never trains on.
HELD_OUT = "held_out"
# Features of InteractionDelta's held-out examples, which the Evaluator
# slices by: whether the user ("new" or "returning") and the item ("new" or
# "known") were in the previous snapshot.
USER_COHORT = "user_cohort"
ITEM_COHORT = "item_cohort"
USER_ID = "user_id"
ITEM_ID = "item_id"
RAW_USER_FEATURES = ("user_id", "user_age", "user_occupation")
RAW_ITEM_FEATURES = ("item_id", "item_genres", "item_year")

# Vocabulary file names inside the transform graph's assets. The id
# vocabularies have a twin with the count of every id in the snapshot.
USER_VOCABULARY = "user_id"
ITEM_VOCABULARY = "item_id"
COUNTS_SUFFIX = "_counts"
DEFAULT_MIN_COUNT = 1
DEFAULT_OOV_BUCKETS = 4
OCCUPATION_VOCABULARY = "user_occupation"
GENRE_VOCABULARY = "item_genres"

# Small categorical features get a fixed width, so that their transformed
# shape is static: the vocabulary keeps the most frequent values and the
# last slot is the out-of-vocabulary bucket.
GENRE_BUCKETS = 64
OCCUPATION_BUCKETS = 64

# Bucket 0 is "unknown" (stored as 0); real values start at bucket 1.
AGE_BOUNDARIES = (1, 18, 25, 35, 45, 56)
YEAR_BOUNDARIES = (1, 1950, 1970, 1980, 1990, 1995, 2000, 2010, 2020)


def _squeeze(tensor: tf.Tensor) -> tf.Tensor:
    """[batch, 1] dense feature -> [batch]."""
    return tf.reshape(tensor, [-1])


def _bucketize(values: tf.Tensor, boundaries: tuple[int, ...]) -> tf.Tensor:
    buckets = tf.raw_ops.Bucketize(
        input=tf.cast(values, tf.float32),
        boundaries=[float(b) for b in boundaries],
    )
    return tf.cast(buckets, tf.int64)


def read_vocabulary(path: str) -> list[str]:
    """The ids of a vocabulary file, one per line, in index order."""
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n").split("\t")[0] for line in f]


def _growing_index(
    ids: tf.Tensor,
    name: str,
    previous: str | None,
    min_count: int,
    oov_buckets: int,
) -> tf.Tensor:
    """Indexes ids in a vocabulary that keeps every previously known id.

    The ids of the `previous` vocabulary file come first, at their old
    indices, whether or not they appear in this snapshot; ids seen for the
    first time follow once they occur `min_count` times, by descending
    count and then id (tf.Transform's order); rarer ones share the hashed
    out-of-vocabulary buckets.
    """
    known = read_vocabulary(previous) if previous else []
    vocabulary = tft.vocabulary(
        ids,
        vocab_filename=name,
        frequency_threshold=min_count,
        reserved_tokens=tf.constant(known, tf.string) if known else None,
    )
    # Counts of every id of the snapshot, which travel with the model.
    tft.vocabulary(
        ids, vocab_filename=name + COUNTS_SUFFIX, store_frequency=True
    )
    return tft.apply_vocabulary(ids, vocabulary, num_oov_buckets=oov_buckets)


def preprocessing_fn(
    inputs: dict[str, tf.Tensor],
    custom_config: Mapping[str, Any] | None = None,
) -> dict[str, tf.Tensor]:
    """Maps raw snapshot features to model inputs (see the module docstring).

    Args:
      inputs: raw features, each a [batch, 1] dense tensor as the schema in
        `schema/` declares them.
      custom_config: the Transform component's custom config:
        `previous_vocabularies` (vocabulary name -> file of the ids the
        base model knows, which keep their indices), `min_count` and
        `oov_buckets` of the id vocabularies.

    Returns:
      The transformed features, keyed by name.
    """
    config = dict(custom_config or {})
    previous = config.get("previous_vocabularies") or {}
    min_count = int(config.get("min_count", DEFAULT_MIN_COUNT))
    oov_buckets = int(config.get("oov_buckets", DEFAULT_OOV_BUCKETS))
    # The raw id features are named like their vocabularies.
    user_index, item_index = (
        _growing_index(
            _squeeze(inputs[name]),
            name,
            previous.get(name),
            min_count,
            oov_buckets,
        )
        for name in (USER_VOCABULARY, ITEM_VOCABULARY)
    )

    occupation = tft.compute_and_apply_vocabulary(
        _squeeze(inputs["user_occupation"]),
        vocab_filename=OCCUPATION_VOCABULARY,
        top_k=OCCUPATION_BUCKETS - 1,
        num_oov_buckets=1,
    )

    genre_tokens = tf.strings.split(_squeeze(inputs["item_genres"]), sep="|")
    genre_ids = tft.compute_and_apply_vocabulary(
        genre_tokens,
        vocab_filename=GENRE_VOCABULARY,
        top_k=GENRE_BUCKETS - 1,
        num_oov_buckets=1,
    )
    # The maximum over an item's genre tokens is its multi-hot row; an item
    # without tokens would reduce to the lowest float, hence the clip at 0.
    genres = tf.maximum(
        tf.reduce_max(
            tf.one_hot(genre_ids, GENRE_BUCKETS, dtype=tf.float32), axis=1
        ),
        0.0,
    )

    return {
        "user_index": user_index,
        "item_index": item_index,
        "user_age_bucket": _bucketize(
            _squeeze(inputs["user_age"]), AGE_BOUNDARIES
        ),
        "user_occupation_index": occupation,
        "item_genres": genres,
        "item_year_bucket": _bucketize(
            _squeeze(inputs["item_year"]), YEAR_BOUNDARIES
        ),
        "timestamp": _squeeze(inputs["timestamp"]),
    }

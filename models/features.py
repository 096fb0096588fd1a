"""Feature names and the tf.Transform preprocessing of a snapshot.

Raw snapshot columns (see `pipeline.snapshots`) become these model inputs:

- `user_index`, `item_index`: [batch] int64 positions in the user and item
  vocabularies; ids the vocabulary has not seen fall into the out-of-
  vocabulary bucket, which is the last index.
- `user_age_bucket`, `item_year_bucket`: [batch] int64 fixed-boundary
  buckets; bucket 0 holds "unknown" (a stored 0).
- `user_occupation_index`: [batch] int64 vocabulary position.
- `item_genres`: [batch, GENRE_BUCKETS] float32 multi-hot genres.
- `timestamp`: [batch] int64 seconds since epoch, passed through.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

__all__ = [
    "AGE_BOUNDARIES",
    "GENRE_BUCKETS",
    "ITEM_ID",
    "ITEM_VOCABULARY",
    "OCCUPATION_BUCKETS",
    "RAW_ITEM_FEATURES",
    "RAW_USER_FEATURES",
    "USER_ID",
    "USER_VOCABULARY",
    "YEAR_BOUNDARIES",
    "preprocessing_fn",
]

USER_ID = "user_id"
ITEM_ID = "item_id"
RAW_USER_FEATURES = ("user_id", "user_age", "user_occupation")
RAW_ITEM_FEATURES = ("item_id", "item_genres", "item_year")

# Vocabulary file names inside the transform graph's assets.
USER_VOCABULARY = "user_id"
ITEM_VOCABULARY = "item_id"
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


def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Maps raw snapshot features to model inputs (see the module docstring).

    Args:
      inputs: raw features, each a [batch, 1] dense tensor as the schema in
        `schema/` declares them.

    Returns:
      The transformed features, keyed by name.
    """
    user_id = _squeeze(inputs["user_id"])
    item_id = _squeeze(inputs["item_id"])

    user_index = tft.compute_and_apply_vocabulary(
        user_id, vocab_filename=USER_VOCABULARY, num_oov_buckets=1
    )
    item_index = tft.compute_and_apply_vocabulary(
        item_id, vocab_filename=ITEM_VOCABULARY, num_oov_buckets=1
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

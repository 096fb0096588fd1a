"""The exported retrieval SavedModel and its signatures.

The SavedModel carries the tf.Transform graph (with the vocabularies), the
two towers and the item vectors of the catalogue, so that it answers a
request from raw ids alone. Signatures:

- `serving_default`: user_id, user_age, user_occupation ([batch] each) ->
  `item_ids` [batch, k] string and `scores` [batch, k] float32, the k best
  items of the catalogue: by brute-force dot product, or from a ScaNN
  index over the catalogue's vectors (`retrieval="scann"`: approximate
  search of a quarter of about sqrt(catalogue) partitions, the best
  candidates rescored exactly).
- `user_embedding`: the same inputs -> `embedding` [batch, dim].
- `item_embedding`: item_id, item_genres, item_year -> `embedding`.
- `score_catalogue`: serialized tf.Examples -> `scores` [batch, columns],
  the score of every catalogue item for the example's user, then padding
  columns up to `max_cutoff` and a last column that stands for "an item
  outside the catalogue". Padding scores below every real item and the last
  column below the padding, so it is never within the top `max_cutoff`.
- `transformed_labels`: serialized tf.Examples -> `catalogue_position`
  [batch] int64, the column of the example's item in `score_catalogue`.

The last two are what TFMA evaluates: Recall@K is then TFMA's own `Recall`
metric with `top_k` over a multi-class prediction.

A user the model does not know (its id falls into an out-of-vocabulary
bucket) is scored from the catalogue's recency-weighted popularity, with
the towers' score from the request's user features added at a smaller
weight (`cold_user_feature_weight`; both standardized over the
catalogue): such a user gets the popular items of the moment, reordered
by what their age and occupation say, never an error or a random list.
Known users are scored by the towers alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_recommenders.layers import factorized_top_k

from models import features
from models.model import TwoTowerModel

__all__ = [
    "CATALOGUE_ASSET",
    "RetrievalModule",
    "export_retrieval_model",
    "popularity_shift",
]

# Scores no real item gets: padding, and the slot of outside items.
_PADDING_SCORE = -1e9
_OUTSIDE_SCORE = -2e9
CATALOGUE_ASSET = "catalogue.txt"


class RetrievalModule(tf.Module):
    """A tf.Module that serves top-k retrieval over a fixed catalogue.

    Args:
      model: the trained two-tower model.
      transform_output: the Transform component's output.
      catalogue_ids: [catalogue] item ids that may be recommended.
      catalogue_vectors: [catalogue, dim] float32 item vectors, row i
        belonging to `catalogue_ids[i]`.
      top_k: how many items `serving_default` returns.
      max_cutoff: the largest K that Recall@K is computed for; the
        `score_catalogue` output has more columns than that.
      num_users: size of the user vocabulary; users past it are unknown.
      catalogue_popularity: [catalogue] recency-weighted popularity, for
        unknown users; without it they are scored like known users.
      cold_user_feature_weight: weight of the towers' score for unknown
        users, next to the popularity's weight of 1.
      retrieval: "brute_force" or "scann" (see the module doc).
    """

    def __init__(
        self,
        model: TwoTowerModel,
        transform_output: tft.TFTransformOutput,
        catalogue_ids: Sequence[str],
        catalogue_vectors: np.ndarray,
        top_k: int,
        max_cutoff: int,
        num_users: int | None = None,
        catalogue_popularity: np.ndarray | None = None,
        cold_user_feature_weight: float = 0.5,
        retrieval: str = "brute_force",
    ):
        super().__init__()
        if len(catalogue_ids) != len(catalogue_vectors):
            raise ValueError(
                f"catalogue_ids has {len(catalogue_ids)} entries but "
                f"catalogue_vectors has {len(catalogue_vectors)} rows."
            )
        if not len(catalogue_ids):
            raise ValueError("The catalogue is empty: nothing to recommend.")
        self.tft_layer = transform_output.transform_features_layer()
        self.user_tower = model.user_tower
        self.item_tower = model.item_tower
        self.catalogue_ids = tf.Variable(
            tf.constant(list(catalogue_ids), tf.string), trainable=False
        )
        self.catalogue_vectors = tf.Variable(
            catalogue_vectors.astype(np.float32), trainable=False
        )
        self.top_k = min(top_k, len(catalogue_ids))
        self.padding = max(max_cutoff - len(catalogue_ids), 0)
        outside = len(catalogue_ids) + self.padding
        self.catalogue_positions = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(catalogue_ids), tf.string),
                tf.range(len(catalogue_ids), dtype=tf.int64),
            ),
            default_value=outside,
        )
        # Users at or past index `num_users` are unknown; without a
        # popularity the towers score them as everyone else.
        self.num_users = tf.constant(
            np.iinfo(np.int64).max if num_users is None else num_users,
            tf.int64,
        )
        if catalogue_popularity is None:
            catalogue_popularity = np.zeros(len(catalogue_ids))
        prior = np.log1p(np.asarray(catalogue_popularity, np.float64))
        prior = (prior - prior.mean()) / (prior.std() or 1.0)
        self.popularity_prior = tf.constant(prior[None, :], tf.float32)
        self.has_popularity = bool(np.any(catalogue_popularity))
        self.cold_user_feature_weight = float(cold_user_feature_weight)
        self.scann = None
        if retrieval == "scann":
            self.scann = _scann_index(catalogue_vectors, self.top_k)
        elif retrieval != "brute_force":
            raise ValueError(f"Unknown retrieval method {retrieval!r}.")
        raw_spec = transform_output.raw_feature_spec()
        self._user_spec = {k: raw_spec[k] for k in features.RAW_USER_FEATURES}
        self._item_id_spec = {features.ITEM_ID: raw_spec[features.ITEM_ID]}

    def _transform(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        columns = {k: tf.reshape(v, [-1, 1]) for k, v in raw.items()}
        return self.tft_layer(columns)

    def _user_vectors(self, raw: dict[str, tf.Tensor]) -> tf.Tensor:
        return self.user_tower(self._transform(raw))

    def _scores(self, transformed: dict[str, tf.Tensor]) -> tf.Tensor:
        """[batch, catalogue] scores; see the module doc for unknown users."""
        scores = tf.matmul(
            self.user_tower(transformed),
            self.catalogue_vectors,
            transpose_b=True,
        )
        if not self.has_popularity:
            return scores
        mean, variance = tf.nn.moments(scores, axes=[1], keepdims=True)
        standard = (scores - mean) / (tf.sqrt(variance) + 1e-6)
        cold = self.popularity_prior + self.cold_user_feature_weight * standard
        unknown = tf.reshape(transformed["user_index"], [-1, 1])
        return tf.where(unknown >= self.num_users, cold, scores)

    def _approximate_top_k(
        self, transformed: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Top K of known users from the ScaNN index.

        Unknown users are scored by popularity and features, not by a dot
        product the index could search: their lists are computed exactly,
        and only for batches that hold one.
        """
        scores, positions = self.scann(self.user_tower(transformed))
        positions = tf.cast(positions, tf.int32)
        if not self.has_popularity:
            return scores, positions
        unknown = tf.reshape(transformed["user_index"], [-1, 1]) >= (
            self.num_users
        )
        exact_scores, exact_positions = tf.cond(
            tf.reduce_any(unknown),
            lambda: tuple(tf.math.top_k(self._scores(transformed), self.top_k)),
            lambda: (scores, positions),
        )
        return (
            tf.where(unknown, exact_scores, scores),
            tf.where(unknown, exact_positions, positions),
        )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, "user_id"),
            tf.TensorSpec([None], tf.int64, "user_age"),
            tf.TensorSpec([None], tf.string, "user_occupation"),
        ]
    )
    def recommend(self, user_id, user_age, user_occupation):
        transformed = self._transform(
            {
                "user_id": user_id,
                "user_age": user_age,
                "user_occupation": user_occupation,
            }
        )
        if self.scann is None:
            scores, positions = tf.math.top_k(
                self._scores(transformed), self.top_k
            )
        else:
            scores, positions = self._approximate_top_k(transformed)
        return {
            "item_ids": tf.gather(self.catalogue_ids, positions),
            "scores": scores,
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, "user_id"),
            tf.TensorSpec([None], tf.int64, "user_age"),
            tf.TensorSpec([None], tf.string, "user_occupation"),
        ]
    )
    def user_embedding(self, user_id, user_age, user_occupation):
        vectors = self._user_vectors(
            {
                "user_id": user_id,
                "user_age": user_age,
                "user_occupation": user_occupation,
            }
        )
        return {"embedding": vectors}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, "item_id"),
            tf.TensorSpec([None], tf.string, "item_genres"),
            tf.TensorSpec([None], tf.int64, "item_year"),
        ]
    )
    def item_embedding(self, item_id, item_genres, item_year):
        raw = {
            "item_id": item_id,
            "item_genres": item_genres,
            "item_year": item_year,
        }
        return {"embedding": self.item_tower(self._transform(raw))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
    def score_catalogue(self, examples):
        parsed = tf.io.parse_example(examples, self._user_spec)
        scores = self._scores(self.tft_layer(parsed))
        batch = tf.shape(scores)[0]
        padding = tf.fill([batch, self.padding], _PADDING_SCORE)
        outside = tf.fill([batch, 1], _OUTSIDE_SCORE)
        return {"scores": tf.concat([scores, padding, outside], axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
    def transformed_labels(self, examples):
        parsed = tf.io.parse_example(examples, self._item_id_spec)
        item_ids = tf.reshape(parsed[features.ITEM_ID], [-1])
        return {"catalogue_position": self.catalogue_positions.lookup(item_ids)}


def popularity_shift(
    training_counts: np.ndarray,
    recent_popularity: np.ndarray,
    smoothing: float = 0.1,
) -> np.ndarray:
    """Log ratio of each item's recent share to its share in training.

    With the logQ correction the towers' score estimates the log of how
    likely a user is to pick an item among all of the training history's
    interactions, so it carries each item's popularity over that whole
    history. What a user picks next follows the items' popularity now.
    Assuming what makes a user pick an item does not change, the odds of
    each item shift by the ratio of its recent share to its training
    share (a prior-shift correction); added to the score, this ranks
    items of rising popularity up and fading ones down.

    Args:
      training_counts: [items] interactions of each item in the training
        snapshot.
      recent_popularity: [items] recency-weighted interaction counts.
      smoothing: the recent shares are shrunk towards the training shares
        by this share of pseudo-interactions, so that an item nobody has
        touched lately is ranked down, not ruled out.

    Returns:
      [items] float32 log ratios.
    """
    training = np.maximum(np.asarray(training_counts, np.float64), 0.0)
    training = training / max(training.sum(), 1e-12)
    recent = np.maximum(np.asarray(recent_popularity, np.float64), 0.0)
    total = recent.sum()
    if total <= 0:
        return np.zeros(len(training), np.float32)
    recent = (recent / total + smoothing * training) / (1.0 + smoothing)
    ratio = np.log(recent + 1e-12) - np.log(training + 1e-12)
    return ratio.astype(np.float32)


def _scann_index(vectors: np.ndarray, top_k: int) -> factorized_top_k.ScaNN:
    """A ScaNN index over the catalogue's vectors; ids are row positions."""
    count = len(vectors)
    leaves = max(1, min(round(math.sqrt(count)), count))
    index = factorized_top_k.ScaNN(
        k=top_k,
        num_leaves=leaves,
        # A quarter of the partitions, and the best 10K candidates rescored
        # exactly: on unclustered random vectors of 8 dimensions (a hard
        # case) about 90% of brute force's top 10, at a fraction of its
        # cost on a large catalogue.
        num_leaves_to_search=max(1, math.ceil(leaves / 4)),
        num_reordering_candidates=min(count, 10 * top_k),
    )
    return index.index(
        tf.constant(vectors, tf.float32), tf.range(count, dtype=tf.int64)
    )


def export_retrieval_model(
    model: TwoTowerModel,
    transform_output: tft.TFTransformOutput,
    catalogue_ids: Sequence[str],
    catalogue_vectors: np.ndarray,
    export_dir: str,
    top_k: int,
    max_cutoff: int = 100,
    num_users: int | None = None,
    catalogue_popularity: np.ndarray | None = None,
    cold_user_feature_weight: float = 0.5,
    retrieval: str = "brute_force",
) -> None:
    """Writes the serving SavedModel to `export_dir` (see module docstring).

    The catalogue's ids are also written as the asset `catalogue.txt`, one
    id per line, in the order of the `score_catalogue` columns.

    Args: those of `RetrievalModule`, and `export_dir`, the folder to
    write.
    """
    module = RetrievalModule(
        model,
        transform_output,
        catalogue_ids,
        catalogue_vectors,
        top_k,
        max_cutoff,
        num_users=num_users,
        catalogue_popularity=catalogue_popularity,
        cold_user_feature_weight=cold_user_feature_weight,
        retrieval=retrieval,
    )
    signatures = {
        "serving_default": module.recommend,
        "user_embedding": module.user_embedding,
        "item_embedding": module.item_embedding,
        "score_catalogue": module.score_catalogue,
        "transformed_labels": module.transformed_labels,
    }
    tf.saved_model.save(
        module,
        export_dir,
        signatures=signatures,
        # The ScaNN index is a resource of ScaNN's own op namespace.
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]),
    )
    assets = tf.io.gfile.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(assets)
    with tf.io.gfile.GFile(tf.io.gfile.join(assets, CATALOGUE_ASSET), "w") as f:
        f.write("".join(f"{item_id}\n" for item_id in catalogue_ids))

"""The exported retrieval SavedModel and its signatures.

The SavedModel carries the tf.Transform graph (with the vocabularies), the
two towers and the item vectors of the catalogue, so that it answers a
request from raw ids alone. Signatures:

- `serving_default`: user_id, user_age, user_occupation ([batch] each) ->
  `item_ids` [batch, k] string and `scores` [batch, k] float32, the k best
  items of the catalogue by brute-force dot product.
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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from models import features
from models.model import TwoTowerModel

__all__ = ["CATALOGUE_ASSET", "RetrievalModule", "export_retrieval_model"]

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
    """

    def __init__(
        self,
        model: TwoTowerModel,
        transform_output: tft.TFTransformOutput,
        catalogue_ids: Sequence[str],
        catalogue_vectors: np.ndarray,
        top_k: int,
        max_cutoff: int,
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
        raw_spec = transform_output.raw_feature_spec()
        self._user_spec = {k: raw_spec[k] for k in features.RAW_USER_FEATURES}
        self._item_id_spec = {features.ITEM_ID: raw_spec[features.ITEM_ID]}

    def _user_vectors(self, raw: dict[str, tf.Tensor]) -> tf.Tensor:
        columns = {k: tf.reshape(v, [-1, 1]) for k, v in raw.items()}
        return self.user_tower(self.tft_layer(columns))

    def _scores(self, user_vectors: tf.Tensor) -> tf.Tensor:
        return tf.matmul(user_vectors, self.catalogue_vectors, transpose_b=True)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, "user_id"),
            tf.TensorSpec([None], tf.int64, "user_age"),
            tf.TensorSpec([None], tf.string, "user_occupation"),
        ]
    )
    def recommend(self, user_id, user_age, user_occupation):
        vectors = self._user_vectors(
            {
                "user_id": user_id,
                "user_age": user_age,
                "user_occupation": user_occupation,
            }
        )
        scores, positions = tf.math.top_k(self._scores(vectors), self.top_k)
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
        columns = {k: tf.reshape(v, [-1, 1]) for k, v in raw.items()}
        return {"embedding": self.item_tower(self.tft_layer(columns))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
    def score_catalogue(self, examples):
        parsed = tf.io.parse_example(examples, self._user_spec)
        scores = self._scores(self.user_tower(self.tft_layer(parsed)))
        batch = tf.shape(scores)[0]
        padding = tf.fill([batch, self.padding], _PADDING_SCORE)
        outside = tf.fill([batch, 1], _OUTSIDE_SCORE)
        return {"scores": tf.concat([scores, padding, outside], axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
    def transformed_labels(self, examples):
        parsed = tf.io.parse_example(examples, self._item_id_spec)
        item_ids = tf.reshape(parsed[features.ITEM_ID], [-1])
        return {"catalogue_position": self.catalogue_positions.lookup(item_ids)}


def export_retrieval_model(
    model: TwoTowerModel,
    transform_output: tft.TFTransformOutput,
    catalogue_ids: Sequence[str],
    catalogue_vectors: np.ndarray,
    export_dir: str,
    top_k: int,
    max_cutoff: int = 100,
) -> None:
    """Writes the serving SavedModel to `export_dir` (see module docstring).

    The catalogue's ids are also written as the asset `catalogue.txt`, one
    id per line, in the order of the `score_catalogue` columns.
    """
    module = RetrievalModule(
        model,
        transform_output,
        catalogue_ids,
        catalogue_vectors,
        top_k,
        max_cutoff,
    )
    signatures = {
        "serving_default": module.recommend,
        "user_embedding": module.user_embedding,
        "item_embedding": module.item_embedding,
        "score_catalogue": module.score_catalogue,
        "transformed_labels": module.transformed_labels,
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    assets = tf.io.gfile.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(assets)
    with tf.io.gfile.GFile(tf.io.gfile.join(assets, CATALOGUE_ASSET), "w") as f:
        f.write("".join(f"{item_id}\n" for item_id in catalogue_ids))

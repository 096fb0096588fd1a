"""The two-tower retrieval model: a user tower, an item tower, in-batch softmax.

Both towers read the transformed features of `models.features`. Each tower
concatenates an id embedding with embeddings of its side features and
projects the result to `embedding_dim`; the score of a (user, item) pair is
the dot product of the two vectors. Training uses TFRS's retrieval task:
every other item of a batch is a negative for a pair (in-batch softmax).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import features

__all__ = [
    "RETRIEVAL_METHODS",
    "ItemTower",
    "ModelConfig",
    "TwoTowerModel",
    "UserTower",
]

RETRIEVAL_METHODS = ("brute_force", "scann")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the towers and of training.

    Attributes:
      embedding_dim: width of the user and item vectors that are scored.
      feature_dim: width of each side-feature embedding.
      batch_size: training batch size; also the number of in-batch
        candidates each positive pair competes with.
      learning_rate: Adagrad learning rate.
      epochs: passes over the training set.
      top_k: items returned by the serving signature.
      seed: seed of the initialisers and of the input shuffle.
      oov_buckets: hashed out-of-vocabulary rows of each id embedding,
        after the vocabulary's rows (Transform uses the same number).
      cold_user_feature_weight: for users the model does not know, the
        weight of the towers' score next to the popularity's (see
        `models.export`).
      retrieval: how `serving_default` finds the top K: "brute_force"
        scores every catalogue item; "scann" searches a ScaNN index
        (approximate, for large catalogues; needs the `scann` package
        wherever the model is loaded).
    """

    embedding_dim: int = 32
    feature_dim: int = 8
    batch_size: int = 512
    learning_rate: float = 0.1
    epochs: int = 2
    top_k: int = 100
    seed: int = 42
    oov_buckets: int = features.DEFAULT_OOV_BUCKETS
    cold_user_feature_weight: float = 0.5
    retrieval: str = "brute_force"

    def __post_init__(self):
        if self.retrieval not in RETRIEVAL_METHODS:
            raise ValueError(
                f"retrieval must be one of {RETRIEVAL_METHODS}, got "
                f"{self.retrieval!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ModelConfig:
        """Builds a config from a mapping, rejecting unknown keys."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown model config keys {unknown}; "
                f"expected some of {sorted(known)}."
            )
        return cls(**values)


def _embedding(rows: int, dim: int, seed: int, name: str):
    return tf.keras.layers.Embedding(
        rows,
        dim,
        embeddings_initializer=tf.keras.initializers.RandomNormal(
            stddev=0.05, seed=seed
        ),
        name=name,
    )


class UserTower(tf.keras.Model):
    """Maps transformed user features to [batch, embedding_dim] vectors."""

    def __init__(self, num_users: int, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        # One row per vocabulary entry, then the out-of-vocabulary rows.
        self.id_embedding = _embedding(
            num_users + config.oov_buckets,
            config.embedding_dim,
            config.seed,
            "user_id",
        )
        self.age_embedding = _embedding(
            len(features.AGE_BOUNDARIES) + 1,
            config.feature_dim,
            config.seed + 1,
            "user_age",
        )
        self.occupation_embedding = _embedding(
            features.OCCUPATION_BUCKETS,
            config.feature_dim,
            config.seed + 2,
            "user_occupation",
        )
        self.projection = tf.keras.layers.Dense(
            config.embedding_dim, name="user_projection"
        )

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        parts = [
            self.id_embedding(inputs["user_index"]),
            self.age_embedding(inputs["user_age_bucket"]),
            self.occupation_embedding(inputs["user_occupation_index"]),
        ]
        return self.projection(tf.concat(parts, axis=-1))


class ItemTower(tf.keras.Model):
    """Maps transformed item features to [batch, embedding_dim] vectors."""

    def __init__(self, num_items: int, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.id_embedding = _embedding(
            num_items + config.oov_buckets,
            config.embedding_dim,
            config.seed + 3,
            "item_id",
        )
        self.year_embedding = _embedding(
            len(features.YEAR_BOUNDARIES) + 1,
            config.feature_dim,
            config.seed + 4,
            "item_year",
        )
        self.genre_projection = tf.keras.layers.Dense(
            config.feature_dim, use_bias=False, name="item_genres"
        )
        self.projection = tf.keras.layers.Dense(
            config.embedding_dim, name="item_projection"
        )

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        parts = [
            self.id_embedding(inputs["item_index"]),
            self.year_embedding(inputs["item_year_bucket"]),
            self.genre_projection(inputs["item_genres"]),
        ]
        return self.projection(tf.concat(parts, axis=-1))


class TwoTowerModel(tfrs.Model):
    """A user tower and an item tower trained with in-batch softmax.

    Example:

        model = TwoTowerModel(num_users=600, num_items=300)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
        model.fit(transformed_dataset, epochs=2)
        scores = tf.matmul(
            model.user_tower(batch), model.item_tower(batch),
            transpose_b=True)
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        config: ModelConfig | None = None,
    ):
        super().__init__()
        self.config = config or ModelConfig()
        # Fixed names: weights are carried over between models by name.
        self.user_tower = UserTower(num_users, self.config, name="user_tower")
        self.item_tower = ItemTower(num_items, self.config, name="item_tower")
        # No FactorizedTopK metric while training: scoring the catalogue
        # every step would cost more than the step. The Evaluator measures
        # Recall@K on held-out pairs instead.
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(
        self, inputs: Mapping[str, tf.Tensor], training: bool = False
    ) -> tf.Tensor:
        user_vectors = self.user_tower(inputs)
        item_vectors = self.item_tower(inputs)
        return self.task(
            user_vectors, item_vectors, compute_metrics=not training
        )

"""The two-tower retrieval model: a user tower, an item tower, in-batch softmax.

Both towers read the transformed features of `models.features`. Each tower
concatenates an id embedding with embeddings of its side features and
projects the result to `embedding_dim`; the score of a (user, item) pair is
the dot product of the two vectors, plus the item's learned bias
(`item_bias`: the last column of each item's id row, met by a constant 1
in the user vector, so the score stays one dot product that brute force
and ScaNN can search). Training minimises the loss of TFRS's retrieval
task (`in_batch_softmax_loss`): every other item of a batch is a negative
for a pair (in-batch softmax), with the sampling-bias (logQ) correction:
popular items are negatives more often than the catalogue's share of
them, so without the correction the model learns to rank them down.

The training step is traced without AutoGraph. AutoGraph rewrites the
source of every Keras and TFRS function a step calls the first time a
process traces it, about 10 s, which every Trainer run would pay again:
more than the whole training of a small warm start (`bench/trace_bench.py`
measures it). Nothing in the step branches on a tensor, so it is traced as
plain Python.
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
    "in_batch_softmax_loss",
    "ItemTower",
    "ModelConfig",
    "TwoTowerModel",
    "UserTower",
    "compile_model",
]

RETRIEVAL_METHODS = ("brute_force", "scann")

# The smallest sampling probability the logQ correction divides by, as in
# TFRS: an item's scores gain at most log(1e6) from its rarity.
_MIN_SAMPLING_PROBABILITY = 1e-6


def in_batch_softmax_loss(
    user_vectors: tf.Tensor,
    item_vectors: tf.Tensor,
    item_sampling_probability: tf.Tensor | None = None,
    sample_weight: tf.Tensor | None = None,
) -> tf.Tensor:
    """The summed softmax loss of each row's item against the batch's items.

    Row i of `item_vectors` is the positive of row i of `user_vectors` and a
    negative of every other row. It is the loss of
    `tfrs.tasks.Retrieval()`, which needs AutoGraph to trace; this one does
    not, and a test holds the two equal.

    Args:
      user_vectors: [batch, dim] query vectors.
      item_vectors: [batch, dim] candidate vectors, one per query.
      item_sampling_probability: [batch] each item's chance to be drawn as
        a negative; its log is taken off the item's scores (logQ).
      sample_weight: [batch] weight of each row's loss.

    Returns:
      A scalar: the batch's losses, weighted and summed.
    """
    scores = tf.matmul(user_vectors, item_vectors, transpose_b=True)
    if item_sampling_probability is not None:
        scores -= tf.math.log(
            tf.clip_by_value(
                item_sampling_probability, _MIN_SAMPLING_PROBABILITY, 1.0
            )
        )
    labels = tf.eye(tf.shape(scores)[0], tf.shape(scores)[1])
    losses = tf.nn.softmax_cross_entropy_with_logits(labels, scores)
    if sample_weight is not None:
        losses *= tf.reshape(tf.cast(sample_weight, losses.dtype), [-1])
    return tf.reduce_sum(losses)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the towers and of training.

    Attributes:
      embedding_dim: width of the user and item vectors that are scored.
      feature_dim: width of each side-feature embedding.
      batch_size: training batch size; also the number of in-batch
        candidates each positive pair competes with.
      learning_rate: Adagrad learning rate.
      epochs: passes over the training set of a cold start (the whole
        snapshot).
      warm_epochs: passes over the training set of a warm start (the
        delta and its replay sample). One pass halves the cost of a warm
        start; it cost 0.010 of Recall@100 on the synthetic history and
        nothing on MovieLens 100K (see the package doc).
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
      item_bias: score each item with a learned bias on top of the dot
        product (see the module doc).
      popularity_shift: weight of `models.export.popularity_shift` in
        the served scores: the log ratio of each item's recent share of
        interactions to its share of the training set, added to the item
        bias of the exported catalogue (so only with `item_bias`; 0
        turns it off).
      logq_correction: subtract each in-batch candidate's log share of the
        training interactions from its logit (`set_item_frequencies`).
      user_id_dropout: share of training rows whose user id is replaced
        by its out-of-vocabulary bucket, which then learns what an unknown
        user does.
      validation_share: with more than 0, the newest share of the training
        rows is held out and training stops when their loss stops falling
        (at most `epochs`; see `models.trainer`).
      patience: epochs without a better validation loss before stopping.
      carry_optimizer: on a warm start, carry Adagrad's accumulators over
        with the weights (`models.warm_start`); False starts them afresh.
    """

    embedding_dim: int = 32
    feature_dim: int = 8
    batch_size: int = 512
    learning_rate: float = 0.1
    epochs: int = 2
    warm_epochs: int = 2
    top_k: int = 100
    seed: int = 42
    oov_buckets: int = features.DEFAULT_OOV_BUCKETS
    cold_user_feature_weight: float = 0.5
    retrieval: str = "brute_force"
    item_bias: bool = True
    logq_correction: bool = True
    popularity_shift: float = 1.0
    user_id_dropout: float = 0.0
    validation_share: float = 0.0
    patience: int = 1
    carry_optimizer: bool = True

    def __post_init__(self):
        for name in ("epochs", "warm_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be >= 1, got {getattr(self, name)}."
                )
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
        self.bias = config.item_bias

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        parts = [
            self.id_embedding(inputs["user_index"]),
            self.age_embedding(inputs["user_age_bucket"]),
            self.occupation_embedding(inputs["user_occupation_index"]),
        ]
        vectors = self.projection(tf.concat(parts, axis=-1))
        if self.bias:
            ones = tf.ones_like(vectors[:, :1])
            vectors = tf.concat([vectors, ones], axis=-1)
        return vectors


class ItemTower(tf.keras.Model):
    """Maps transformed item features to [batch, embedding_dim] vectors."""

    def __init__(self, num_items: int, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.bias = config.item_bias
        self.id_embedding = _embedding(
            num_items + config.oov_buckets,
            config.embedding_dim + int(config.item_bias),
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
        rows = self.id_embedding(inputs["item_index"])
        if self.bias:
            rows, bias = rows[:, :-1], rows[:, -1:]
        parts = [
            rows,
            self.year_embedding(inputs["item_year_bucket"]),
            self.genre_projection(inputs["item_genres"]),
        ]
        vectors = self.projection(tf.concat(parts, axis=-1))
        if self.bias:
            vectors = tf.concat([vectors, bias], axis=-1)
        return vectors


class TwoTowerModel(tfrs.Model):
    """A user tower and an item tower trained with in-batch softmax.

    Example:

        model = TwoTowerModel(num_users=600, num_items=300)
        model.user_tower(batch), model.item_tower(batch)  # builds them
        compile_model(model)
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
        self.num_users = num_users
        # No FactorizedTopK metric: scoring the catalogue every step would
        # cost more than the step. The Evaluator measures Recall@K on
        # held-out pairs instead. Keras reports what a step returns as it
        # is after the last batch, so the validation loss early stopping
        # compares is kept as a mean over every row.
        self.validation_loss = tf.keras.metrics.Mean(name="loss")
        self.item_log_frequency = tf.Variable(
            tf.fill([num_items + self.config.oov_buckets], -10.0),
            trainable=False,
            name="item_log_frequency",
        )

    def set_item_frequencies(self, counts) -> None:
        """Sets each known item's share of the training interactions."""
        counts = tf.cast(tf.convert_to_tensor(counts), tf.float32)
        share = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
        rest = tf.fill([self.config.oov_buckets], 1e-6)
        self.item_log_frequency.assign(
            tf.math.log(tf.maximum(tf.concat([share, rest], 0), 1e-9))
        )

    def compute_loss(
        self, inputs: Mapping[str, tf.Tensor], training: bool = False
    ) -> tf.Tensor:
        inputs = dict(inputs)
        if training and self.config.user_id_dropout > 0:
            index = inputs["user_index"]
            dropped = (
                tf.random.uniform(tf.shape(index)) < self.config.user_id_dropout
            )
            oov = self.num_users + index % self.config.oov_buckets
            inputs["user_index"] = tf.where(dropped, oov, index)
        user_vectors = self.user_tower(inputs)
        item_vectors = self.item_tower(inputs)
        probability = None
        if self.config.logq_correction:
            probability = tf.exp(
                tf.gather(self.item_log_frequency, inputs["item_index"])
            )
        return in_batch_softmax_loss(
            user_vectors,
            item_vectors,
            item_sampling_probability=probability,
            sample_weight=inputs.get("sample_weight"),
        )

    # See the module doc: traced as plain Python, without AutoGraph.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs: Mapping[str, tf.Tensor]) -> dict:
        return super().train_step(inputs)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, inputs: Mapping[str, tf.Tensor]) -> dict:
        """The mean loss per row of every batch evaluated so far."""
        loss = self.compute_loss(inputs, training=False)
        rows = tf.cast(tf.shape(inputs["item_index"])[0], loss.dtype)
        self.validation_loss.update_state(
            loss / tf.maximum(rows, 1.0), sample_weight=rows
        )
        return {"loss": self.validation_loss.result()}


def compile_model(model: TwoTowerModel) -> None:
    """Compiles `model` with Adagrad and makes the optimizer's slots now.

    Call it once the towers are built. XLA compilation of the optimizer
    costs seconds per new model and buys nothing for embedding lookups on
    CPU. A `tf.function` that makes variables on its first call is traced
    twice, so slots made before `fit` spare its first step a second trace
    of the training step (`bench/trace_bench.py`).
    """
    model.compile(
        optimizer=tf.keras.optimizers.Adagrad(
            model.config.learning_rate, jit_compile=False
        )
    )
    model.optimizer.build(model.trainable_variables)

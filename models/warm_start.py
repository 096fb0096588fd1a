"""What a pushed model carries for the next run, and the carry-over itself.

Every exported model holds, under `assets.extra/`:

- `vocabulary/<name>.tsv`: the user and item vocabularies in index order,
  one `id<TAB>count` line per id (count: interactions in the snapshot the
  model was trained on, 0 for ids that vanished). `GrowingTransform`
  reads them to keep every known id at its index.
- `warm_start/weights.npz` and `warm_start/state.json`: every weight of
  the two towers by name, the model config, the span and the vocabulary
  sizes. The next Trainer copies them into its new model.

Carry-over (`carry_over`): weights of the same name and shape are copied
as they are; in the two id embeddings each known id gets its old row back
at its (unchanged) index. A new id's row starts as the out-of-vocabulary
row the id was hashed to before it had a row of its own: that row was
trained on the rare ids that shared it, so a new id starts where the old
model already placed it, at the scale of trained rows, instead of as small
random noise that retrieval would rarely reach.

The optimizer's state travels too (`ModelConfig.carry_optimizer`, on by
default): `carry_optimizer_state` copies Adagrad's accumulators (the
summed squared gradients, `warm_start/optimizer.npz`) the same way, row
by row. A known id keeps the small steps its history earned, and a new
id's row starts at Adagrad's initial value, taking large steps. Fresh
accumulators would let every carried row take its first, largest steps
again on a small delta, undoing part of what it had learnt. They start
fresh when the base model has none or its learning rate differs, since
the carried sums would then mean other step sizes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from models import features
from models.model import ModelConfig, TwoTowerModel

__all__ = [
    "BaseModelState",
    "CarryOver",
    "ColdStart",
    "carry_optimizer_state",
    "carry_over",
    "describe",
    "oov_rows",
    "read_state",
    "similar_item_rows",
    "vocabulary_path",
    "write_state",
]

_EXTRA = "assets.extra"
_STATE_DIR = "warm_start"
_WEIGHTS = "weights.npz"
_OPTIMIZER = "optimizer.npz"
_ACCUMULATOR = "accumulator"
_STATE = "state.json"
_EMBEDDINGS = {
    features.USER_VOCABULARY: "user_tower",
    features.ITEM_VOCABULARY: "item_tower",
}
# Config fields that change the shape or meaning of the weights.
_ARCHITECTURE = ("embedding_dim", "feature_dim", "oov_buckets", "item_bias")


class ColdStart(Exception):  # noqa: N818 - a decision, not a failure.
    """The base model cannot be warm-started from; the message says why."""


def vocabulary_path(serving_dir: str, name: str) -> str:
    """Where a model keeps the vocabulary file `name` (see module doc)."""
    return os.path.join(serving_dir, _EXTRA, "vocabulary", f"{name}.tsv")


def _variables(model: TwoTowerModel) -> dict[str, tf.Variable]:
    """The towers' weights keyed by a name that is stable across models."""
    named = {}
    for tower in (model.user_tower, model.item_tower):
        for variable in tower.weights:
            # "user_tower/user_id/embeddings:0" whatever the model's scope.
            short = variable.name.split(":")[0]
            short = short[short.index(tower.name) :]
            named[short] = variable
    return named


def _accumulators(model: TwoTowerModel) -> dict[str, tf.Variable]:
    """Adagrad's accumulator of each tower weight, under the weight's key."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return {}
    keys = set(_variables(model))
    marker = f"{_ACCUMULATOR}/"
    slots = {}
    for variable in optimizer.variables:
        # "Adagrad/accumulator/user_tower/user_id/embeddings:0", the
        # prefix depending on the scope the optimizer was built in.
        name = variable.name.split(":")[0]
        if marker not in name:
            continue
        weight = name[name.index(marker) + len(marker) :]
        for tower in (model.user_tower.name, model.item_tower.name):
            if tower in weight and weight[weight.index(tower) :] in keys:
                slots[weight[weight.index(tower) :]] = variable
    return slots


def _embedding_name(vocabulary: str) -> str:
    return f"{_EMBEDDINGS[vocabulary]}/{vocabulary}/embeddings"


def write_state(
    serving_dir: str,
    model: TwoTowerModel,
    vocabularies: Mapping[str, Sequence[str]],
    counts: Mapping[str, Mapping[str, int]],
    span: int,
) -> None:
    """Writes the vocabularies and the weights into an exported model."""
    for name, ids in vocabularies.items():
        lines = "".join(f"{i}\t{counts[name].get(i, 0)}\n" for i in ids)
        path = vocabulary_path(serving_dir, name)
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(lines)
    state_dir = os.path.join(serving_dir, _EXTRA, _STATE_DIR)
    tf.io.gfile.makedirs(state_dir)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.numpy() for k, v in _variables(model).items()})
    with tf.io.gfile.GFile(os.path.join(state_dir, _WEIGHTS), "wb") as f:
        f.write(buffer.getvalue())
    slots = _accumulators(model)
    if slots:
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v.numpy() for k, v in slots.items()})
        path = os.path.join(state_dir, _OPTIMIZER)
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buffer.getvalue())
    with tf.io.gfile.GFile(os.path.join(state_dir, _STATE), "w") as f:
        json.dump(
            {
                "config": model.config.to_dict(),
                "span": span,
                "vocabulary_sizes": {
                    k: len(v) for k, v in vocabularies.items()
                },
            },
            f,
            indent=2,
        )


@dataclasses.dataclass(frozen=True)
class BaseModelState:
    """What `read_state` finds in a base model."""

    config: ModelConfig
    span: int
    vocabularies: dict[str, list[str]]
    weights: dict[str, np.ndarray]
    accumulators: dict[str, np.ndarray] = dataclasses.field(
        default_factory=dict
    )


def read_state(serving_dir: str) -> BaseModelState:
    """Reads the warm-start state of an exported model.

    Raises:
      ColdStart: a file is missing or unreadable, or the pieces disagree.
    """
    state_dir = os.path.join(serving_dir, _EXTRA, _STATE_DIR)
    try:
        with tf.io.gfile.GFile(os.path.join(state_dir, _STATE)) as f:
            state = json.load(f)
        with tf.io.gfile.GFile(os.path.join(state_dir, _WEIGHTS), "rb") as f:
            data = io.BytesIO(f.read())
        # allow_pickle=False: a model file never runs code.
        with np.load(data, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
        accumulators = {}
        optimizer = os.path.join(state_dir, _OPTIMIZER)
        if tf.io.gfile.exists(optimizer):
            with tf.io.gfile.GFile(optimizer, "rb") as f:
                data = io.BytesIO(f.read())
            with np.load(data, allow_pickle=False) as npz:
                accumulators = {k: npz[k] for k in npz.files}
        vocabularies = {
            name: features.read_vocabulary(vocabulary_path(serving_dir, name))
            for name in _EMBEDDINGS
        }
        config = ModelConfig.from_dict(state["config"])
        span = int(state["span"])
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        zipfile.BadZipFile,
        tf.errors.OpError,
    ) as error:
        raise ColdStart(
            f"the base model's warm-start files in {serving_dir} cannot be "
            f"read ({type(error).__name__}: {error})"
        ) from error
    for name, ids in vocabularies.items():
        rows = weights.get(_embedding_name(name))
        if rows is None or len(rows) != len(ids) + config.oov_buckets:
            raise ColdStart(
                f"the base model's {name} vocabulary ({len(ids)} ids) does "
                "not match its embedding rows"
            )
    return BaseModelState(config, span, vocabularies, weights, accumulators)


def oov_rows(ids: Sequence[str], vocabulary_size: int, buckets: int):
    """The out-of-vocabulary row each id hashes to in a vocabulary.

    The same hash as `tft.apply_vocabulary(..., num_oov_buckets=buckets)`.
    """
    if not len(ids):
        return np.zeros([0], np.int64)
    hashed = tf.strings.to_hash_bucket_fast(tf.constant(list(ids)), buckets)
    return vocabulary_size + hashed.numpy().astype(np.int64)


@dataclasses.dataclass(frozen=True)
class CarryOver:
    """Rows of each id embedding carried from the base model, and new."""

    carried: dict[str, int]
    new: dict[str, int]


SIMILAR_ITEMS = 10
"""How many known items a new item's first row is averaged from."""


def similar_item_rows(
    old_rows: np.ndarray,
    known: int,
    new_indices: np.ndarray,
    item_features: Mapping[str, np.ndarray],
    k: int = SIMILAR_ITEMS,
) -> dict[int, np.ndarray]:
    """First rows of new items: the mean row of their most similar items.

    Similarity is the cosine of the genre vectors, plus a little for the
    same release-year bucket (which breaks ties among same-genre items).
    Only known items (index below `known`) that have features count.

    Args:
      old_rows: the base model's id embedding, known rows first.
      known: the number of known items.
      new_indices: indices of the new items to initialise.
      item_features: transformed item features of the snapshot's items:
        `item_index`, `item_genres` [items, genres], `item_year_bucket`.
      k: neighbours averaged per new item.

    Returns:
      index -> row, for each new item that has features; the others keep
      their out-of-vocabulary start.
    """
    index = np.asarray(item_features["item_index"])
    genres = np.asarray(item_features["item_genres"], np.float64)
    years = np.asarray(item_features["item_year_bucket"])
    is_known = index < known
    if not is_known.any():
        return {}
    norms = np.linalg.norm(genres, axis=1, keepdims=True)
    unit = genres / np.maximum(norms, 1e-9)
    position = {int(i): p for p, i in enumerate(index)}
    known_unit, known_years = unit[is_known], years[is_known]
    known_rows = old_rows[index[is_known]]
    rows = {}
    for new in new_indices:
        p = position.get(int(new))
        if p is None:
            continue
        similarity = known_unit @ unit[p] + 0.1 * (known_years == years[p])
        nearest = np.argsort(-similarity, kind="stable")[:k]
        rows[int(new)] = known_rows[nearest].mean(axis=0)
    return rows


def _grown(
    old_rows: np.ndarray, known: int, new_rows: np.ndarray
) -> np.ndarray:
    """An id embedding's rows after growth: known, new, then OOV rows."""
    return np.concatenate([old_rows[:known], new_rows, old_rows[known:]])


def carry_over(
    model: TwoTowerModel,
    base: BaseModelState,
    vocabularies: Mapping[str, Sequence[str]],
    item_features: Mapping[str, np.ndarray] | None = None,
) -> CarryOver:
    """Copies the base model's weights into a built `model`.

    Args:
      model: the new model, built, with vocabularies that extend the base
        model's.
      base: the base model's state.
      vocabularies: the new model's vocabularies, by name.
      item_features: transformed features of the snapshot's items (see
        `similar_item_rows`); with them, a new item starts as the mean of
        its most similar known items instead of its out-of-vocabulary row.

    Raises:
      ColdStart: the architectures differ, or a vocabulary does not extend
        the base model's.
    """
    for field in _ARCHITECTURE:
        old, new = getattr(base.config, field), getattr(model.config, field)
        if old != new:
            raise ColdStart(
                f"the base model's {field} is {old}, the config's is {new}"
            )
    variables = _variables(model)
    if set(variables) != set(base.weights):
        raise ColdStart(
            "the base model's towers differ: weights "
            f"{sorted(set(variables) ^ set(base.weights))} are in one "
            "model only"
        )
    values = {}
    carried, new = {}, {}
    oov = model.config.oov_buckets
    for name, ids in vocabularies.items():
        old_ids = base.vocabularies[name]
        if list(ids[: len(old_ids)]) != old_ids:
            raise ColdStart(
                f"the {name} vocabulary does not extend the base model's"
            )
        old_rows = base.weights[_embedding_name(name)]
        fresh = list(ids[len(old_ids) :])
        rows = _grown(
            old_rows, len(old_ids), old_rows[oov_rows(fresh, len(old_ids), oov)]
        )
        if name == features.ITEM_VOCABULARY and item_features is not None:
            similar = similar_item_rows(
                old_rows,
                len(old_ids),
                np.arange(len(old_ids), len(ids)),
                item_features,
            )
            for row, value in similar.items():
                rows[row] = value
        values[_embedding_name(name)] = rows
        carried[name], new[name] = len(old_ids), len(fresh)
    for key, variable in variables.items():
        value = values.get(key, base.weights[key])
        if tuple(value.shape) != tuple(variable.shape):
            raise ColdStart(
                f"the base model's {key} has shape {value.shape}, the new "
                f"model's {tuple(variable.shape)}"
            )
        values[key] = value
    for key, variable in variables.items():
        variable.assign(values[key])
    return CarryOver(carried, new)


def carry_optimizer_state(
    model: TwoTowerModel,
    base: BaseModelState,
    vocabularies: Mapping[str, Sequence[str]],
) -> bool:
    """Copies the base model's Adagrad accumulators into `model`'s optimizer.

    Call it after `carry_over` and `compile`. Rows follow their ids as in
    `carry_over`; a new id's rows keep the optimizer's initial value.

    Returns:
      Whether they were carried: False when the base model has none (it
      was exported before they were kept) or its learning rate differs.
    """
    if not base.accumulators:
        return False
    if base.config.learning_rate != model.config.learning_rate:
        return False
    model.optimizer.build(model.trainable_variables)
    slots = _accumulators(model)
    if set(slots) != set(base.accumulators):
        return False
    values = dict(base.accumulators)
    for name, ids in vocabularies.items():
        key = _embedding_name(name)
        known = len(base.vocabularies[name])
        start = slots[key].numpy()
        values[key] = _grown(
            base.accumulators[key], known, start[known : len(ids)]
        )
    for key, slot in slots.items():
        if tuple(values[key].shape) != tuple(slot.shape):
            return False
    for key, slot in slots.items():
        slot.assign(values[key])
    return True


def describe(summary: Mapping[str, Any]) -> str:
    """A training summary (see `models.trainer`) in one line."""
    if summary["mode"] == "warm":
        carried, new = summary["carried"], summary["new"]
        start = (
            f"warm start from span {summary['base_span']}: carried "
            f"{carried['user_id']:,} users, {carried['item_id']:,} items; "
            f"new {new['user_id']:,} users, {new['item_id']:,} items"
        )
    else:
        start = f"cold start ({summary['reason']})"
    return (
        f"{start}; trained on the {summary['training_set']}: "
        f"{summary['examples']:,} examples, {summary['steps']:,} steps, "
        f"{summary['seconds']:.1f} s"
    )

"""Append-only vocabularies, the carry-over of weights, cold-start reasons."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features, trainer, warm_start
from models.model import ModelConfig, TwoTowerModel, compile_model

_SPEC = {"user_id": tf.io.FixedLenFeature([1], tf.string)}


def _index_ids(tmp_path, ids, previous=None, min_count=1, oov_buckets=3):
    """Runs the id vocabulary of `preprocessing_fn` over `ids`.

    Returns the vocabulary (ids in index order) and each input id's index.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    vocabulary_file = None
    if previous is not None:
        vocabulary_file = str(tmp_path / "previous.tsv")
        with open(vocabulary_file, "w") as f:
            f.write("".join(f"{i}\t1\n" for i in previous))

    def preprocessing_fn(inputs):
        index = features._growing_index(
            features._squeeze(inputs["user_id"]),
            "user_id",
            vocabulary_file,
            min_count,
            oov_buckets,
        )
        return {"index": index}

    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(_SPEC)
    )
    graph = str(tmp_path / "graph")
    with tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
        (rows, _), transform_fn = (
            [{"user_id": [i.encode()]} for i in ids],
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    output = tft.TFTransformOutput(graph)
    vocabulary = [t.decode() for t in output.vocabulary_by_name("user_id")]
    return vocabulary, [int(r["index"]) for r in rows]


_IDS = st.lists(
    st.text("abcdef", min_size=1, max_size=3), min_size=1, max_size=30
)


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    first=_IDS,
    second=_IDS,
    min_count=st.integers(1, 3),
)
def test_every_known_id_keeps_its_index_as_the_vocabulary_grows(
    tmp_path_factory, first, second, min_count
):
    tmp_path = tmp_path_factory.mktemp("growth")
    old, _ = _index_ids(tmp_path / "a", first, min_count=1)

    new, indices = _index_ids(
        tmp_path / "b", second, previous=old, min_count=min_count
    )

    # Known ids first, in their order, whether or not `second` has them.
    assert new[: len(old)] == old
    counts = {i: second.count(i) for i in second}
    appended = new[len(old) :]
    assert set(appended) == {
        i for i, c in counts.items() if i not in old and c >= min_count
    }
    # Appended in descending count order.
    assert [counts[i] for i in appended] == sorted(
        (counts[i] for i in appended), reverse=True
    )
    for token, index in zip(second, indices, strict=True):
        if token in new:
            assert index == new.index(token)
        else:
            # A rare new id sits in the hashed bucket the carry-over uses.
            assert index == warm_start.oov_rows([token], len(new), 3)[0]


def _model(num_users, num_items, **config):
    model = TwoTowerModel(num_users, num_items, ModelConfig(**config))
    batch = {
        "user_index": tf.constant([0]),
        "user_age_bucket": tf.constant([0]),
        "user_occupation_index": tf.constant([0]),
        "item_index": tf.constant([0]),
        "item_year_bucket": tf.constant([0]),
        "item_genres": tf.zeros([1, features.GENRE_BUCKETS]),
    }
    model.user_tower(batch)
    model.item_tower(batch)
    return model


_OLD = {"user_id": ["u1", "u2", "u3"], "item_id": ["i1", "i2"]}
_NEW = {"user_id": ["u1", "u2", "u3", "u9"], "item_id": ["i1", "i2", "i7"]}


@pytest.fixture()
def base_dir(tmp_path):
    model = _model(3, 2, seed=1)
    counts = {"user_id": {"u1": 4}, "item_id": {"i2": 1}}
    warm_start.write_state(str(tmp_path), model, _OLD, counts, span=3)
    return str(tmp_path), model


def test_carry_over_copies_every_known_row_before_training(base_dir):
    path, base = base_dir
    state = warm_start.read_state(path)
    model = _model(4, 3, seed=2)

    carried = warm_start.carry_over(model, state, _NEW)

    assert state.span == 3
    assert carried.carried == {"user_id": 3, "item_id": 2}
    assert carried.new == {"user_id": 1, "item_id": 1}
    for tower, old_tower, name in (
        (model.user_tower, base.user_tower, "user_id"),
        (model.item_tower, base.item_tower, "item_id"),
    ):
        new_rows = tower.id_embedding.embeddings.numpy()
        old_rows = old_tower.id_embedding.embeddings.numpy()
        known = len(_OLD[name])
        np.testing.assert_array_equal(new_rows[:known], old_rows[:known])
        # The new id starts at the OOV row it hashed to before; the OOV
        # rows themselves follow the new ids.
        bucket = warm_start.oov_rows(_NEW[name][known:], known, 4)[0]
        np.testing.assert_array_equal(new_rows[known], old_rows[bucket])
        np.testing.assert_array_equal(new_rows[known + 1 :], old_rows[known:])
    np.testing.assert_array_equal(
        model.user_tower.projection.kernel.numpy(),
        base.user_tower.projection.kernel.numpy(),
    )
    # The vocabulary files carry the counts.
    with open(warm_start.vocabulary_path(path, "user_id")) as f:
        assert f.read().splitlines() == ["u1\t4", "u2\t0", "u3\t0"]


def _compile(model):
    compile_model(model)
    return model


def _slot(model, weight):
    return warm_start._accumulators(model)[weight].numpy()


def test_carry_optimizer_state_follows_each_id(tmp_path):
    base = _compile(_model(3, 2, seed=1))
    batch = {
        "user_index": tf.constant([0, 1, 2, 5]),
        "user_age_bucket": tf.constant([0, 1, 2, 1]),
        "user_occupation_index": tf.constant([0, 1, 2, 3]),
        "item_index": tf.constant([0, 1, 1, 3]),
        "item_year_bucket": tf.constant([0, 1, 0, 1]),
        "item_genres": tf.ones([4, features.GENRE_BUCKETS]),
    }
    for _ in range(3):
        base.train_step(batch)
    counts = {"user_id": {}, "item_id": {}}
    warm_start.write_state(str(tmp_path), base, _OLD, counts, span=3)
    state = warm_start.read_state(str(tmp_path))
    model = _model(4, 3, seed=2)
    warm_start.carry_over(model, state, _NEW)

    assert warm_start.carry_optimizer_state(_compile(model), state, _NEW)

    initial = model.optimizer.initial_accumulator_value
    for name, weight in (
        ("user_id", "user_tower/user_id/embeddings"),
        ("item_id", "item_tower/item_id/embeddings"),
    ):
        old, new = _slot(base, weight), _slot(model, weight)
        known = len(_OLD[name])
        # Trained rows have summed squared gradients above the start.
        assert (old[:known] > initial).any()
        np.testing.assert_array_equal(new[:known], old[:known])
        np.testing.assert_array_equal(new[known], np.full_like(old[0], initial))
        np.testing.assert_array_equal(new[known + 1 :], old[known:])
    kernel = "user_tower/user_projection/kernel"
    np.testing.assert_array_equal(_slot(model, kernel), _slot(base, kernel))


def test_optimizer_state_starts_fresh_when_it_cannot_be_carried(base_dir):
    path, _ = base_dir
    # The base model was never compiled: no optimizer state was written.
    state = warm_start.read_state(path)
    assert state.accumulators == {}
    model = _compile(_model(4, 3, seed=2))
    warm_start.carry_over(model, state, _NEW)
    assert not warm_start.carry_optimizer_state(model, state, _NEW)
    # Another learning rate gives the carried sums another meaning.
    state = warm_start.BaseModelState(
        state.config,
        state.span,
        state.vocabularies,
        state.weights,
        {"user_tower/user_id/embeddings": np.ones([7, 32])},
    )
    other = _compile(_model(4, 3, seed=2, learning_rate=0.05))
    assert not warm_start.carry_optimizer_state(other, state, _NEW)


def _fn_args(base_model):
    return types.SimpleNamespace(base_model=base_model)


def test_no_base_model_is_a_cold_start():
    assert trainer._base_state(_fn_args(None), {}, 2) == (
        None,
        "no base model",
    )


def test_a_full_retrain_flag_or_span_is_a_cold_start(base_dir):
    path, _ = base_dir
    assert trainer._base_state(_fn_args(path), {"full_retrain": True}, 2)[
        1
    ] == ("a full retrain was asked for")
    state, reason = trainer._base_state(
        _fn_args(path), {"full_retrain_every": 3}, 6
    )
    assert state is None
    assert reason == "span 6 is a full-retrain span (every 3)"
    state, reason = trainer._base_state(
        _fn_args(path), {"full_retrain_every": 3}, 7
    )
    assert state is not None and reason == ""


def test_a_missing_vocabulary_file_is_a_cold_start(base_dir):
    path, _ = base_dir
    os.remove(warm_start.vocabulary_path(path, "item_id"))

    state, reason = trainer._base_state(_fn_args(path), {}, 4)

    assert state is None
    assert "cannot be read" in reason and "item_id.tsv" in reason


def test_a_corrupt_weights_file_is_a_cold_start(base_dir):
    path, _ = base_dir
    weights = os.path.join(path, "assets.extra", "warm_start", "weights.npz")
    with open(weights, "wb") as f:
        f.write(b"not a zip file")

    state, reason = trainer._base_state(_fn_args(path), {}, 4)

    assert state is None
    assert "cannot be read" in reason


def test_another_architecture_is_a_cold_start(base_dir):
    path, _ = base_dir
    state = warm_start.read_state(path)

    with pytest.raises(warm_start.ColdStart, match="embedding_dim is 32"):
        warm_start.carry_over(_model(4, 3, embedding_dim=16), state, _NEW)


def test_a_vocabulary_that_does_not_extend_the_base_is_a_cold_start(
    base_dir,
):
    path, _ = base_dir
    state = warm_start.read_state(path)
    shuffled = {**_NEW, "user_id": ["u2", "u1", "u3", "u9"]}

    with pytest.raises(warm_start.ColdStart, match="does not extend"):
        warm_start.carry_over(_model(4, 3), state, shuffled)


def test_summary_reads_in_one_line():
    summary = {
        "mode": "warm",
        "base_span": 2,
        "carried": {"user_id": 1000, "item_id": 300},
        "new": {"user_id": 90, "item_id": 30},
        "training_set": "delta (added, modified, replay)",
        "examples": 2400,
        "steps": 10,
        "seconds": 1.25,
    }

    line = warm_start.describe(summary)

    assert line == (
        "warm start from span 2: carried 1,000 users, 300 items; new 90 "
        "users, 30 items; trained on the delta (added, modified, replay): "
        "2,400 examples, 10 steps, 1.2 s"
    )
    cold = {**summary, "mode": "cold", "reason": "no base model"}
    assert warm_start.describe(cold).startswith("cold start (no base model)")


def _genres(*slots):
    row = np.zeros(features.GENRE_BUCKETS, np.float32)
    row[list(slots)] = 1
    return row


def test_a_new_item_starts_as_the_mean_of_its_most_similar_known_items():
    old_rows = np.arange(5 * 3, dtype=np.float64).reshape(5, 3)
    catalogue = {
        "item_index": np.array([0, 1, 2, 3, 5]),
        "item_genres": np.stack(
            [_genres(1), _genres(1, 2), _genres(7), _genres(1), _genres(1)]
        ),
        "item_year_bucket": np.array([3, 3, 3, 5, 5]),
    }

    rows = warm_start.similar_item_rows(
        old_rows, 4, np.array([4, 5]), catalogue, k=2
    )

    # Item 5 (genre 1, year bucket 5): items 3 (same genre and year) and 0
    # (same genre); item 4 has no features and keeps its start.
    assert list(rows) == [5]
    np.testing.assert_allclose(rows[5], (old_rows[3] + old_rows[0]) / 2)


def test_a_new_item_like_a_popular_one_is_retrievable_after_the_warm_start(
    tmp_path,
):
    known = [f"i{n}" for n in range(12)]
    base = _model(3, len(known), seed=1)
    rows = base.item_tower.id_embedding.embeddings.numpy()
    # Item i0, the popular one, gets a bias well above every other item's.
    rows[0, -1] = 5.0
    base.item_tower.id_embedding.embeddings.assign(rows)
    old = {"user_id": _OLD["user_id"], "item_id": known}
    counts = {"user_id": {}, "item_id": {}}
    warm_start.write_state(str(tmp_path), base, old, counts, span=1)
    model = _model(3, len(known) + 1, seed=2)
    genres = [_genres(n % 6 + 1) for n in range(12)] + [_genres(1)]
    catalogue = {
        "item_index": np.arange(13),
        "item_genres": np.stack(genres),
        "item_year_bucket": np.array([2] * 12 + [2]),
    }

    warm_start.carry_over(
        model,
        warm_start.read_state(str(tmp_path)),
        {"user_id": old["user_id"], "item_id": known + ["new"]},
        item_features=catalogue,
    )

    # Only i0 and i6 share the new item's genre: its first row is their
    # mean, bias included, so it ranks second for every user, right after
    # the popular item it resembles.
    items = {k: tf.constant(v) for k, v in catalogue.items()}
    users = {
        "user_index": tf.constant([0, 1, 2]),
        "user_age_bucket": tf.constant([0, 1, 2]),
        "user_occupation_index": tf.constant([0, 1, 2]),
    }
    scores = tf.matmul(
        model.user_tower(users), model.item_tower(items), transpose_b=True
    ).numpy()
    top = np.argsort(-scores, axis=1)[:, :2]
    assert (top == [0, 12]).all()

"""The two-tower model: a training step, the export and its signatures."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow_transform.tf_metadata import (
    dataset_metadata,
    metadata_io,
    schema_utils,
)

from models import features
from models.export import export_retrieval_model, popularity_shift
from models.model import (
    ModelConfig,
    TwoTowerModel,
    compile_model,
    in_batch_softmax_loss,
)
from models.trainer import (
    _build,
    _item_counts,
    collect_catalogue,
    distribution_strategy,
)

_RAW_SPEC = {
    "user_id": tf.io.FixedLenFeature([1], tf.string),
    "item_id": tf.io.FixedLenFeature([1], tf.string),
    "rating": tf.io.FixedLenFeature([1], tf.float32),
    "timestamp": tf.io.FixedLenFeature([1], tf.int64),
    "item_genres": tf.io.FixedLenFeature([1], tf.string),
    "item_year": tf.io.FixedLenFeature([1], tf.int64),
    "user_age": tf.io.FixedLenFeature([1], tf.int64),
    "user_occupation": tf.io.FixedLenFeature([1], tf.string),
}


def _rows(num_users=12, num_items=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(200):
        user, item = rng.integers(num_users), rng.integers(num_items)
        rows.append(
            {
                "user_id": [f"u{user}".encode()],
                "item_id": [f"i{item}".encode()],
                "rating": [float(rng.integers(1, 6))],
                "timestamp": [1_600_000_000 + t],
                "item_genres": [
                    ("Drama|Comedy" if item % 2 else "Action").encode()
                ],
                "item_year": [1980 + item],
                "user_age": [20 + user],
                "user_occupation": [b"student" if user % 2 else b"writer"],
            }
        )
    return rows


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """(transformed rows, TFTransformOutput) of a small random snapshot."""
    out = tmp_path_factory.mktemp("transform")
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(_RAW_SPEC)
    )
    with tft_beam.Context(temp_dir=str(out / "tmp")):
        (rows, _), transform_fn = (
            _rows(),
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(features.preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(out / "graph"))
    # The export reads the raw feature spec, which the Transform component
    # writes beside the transform graph.
    metadata_io.write_metadata(
        metadata,
        str(out / "graph" / tft.TFTransformOutput.RAW_METADATA_DIR),
    )
    return rows, tft.TFTransformOutput(str(out / "graph"))


def _batch(rows):
    return {
        key: tf.constant(np.stack([row[key] for row in rows]))
        for key in rows[0]
    }


def test_vocabularies_and_features(transformed):
    rows, output = transformed
    assert output.vocabulary_size_by_name(features.USER_VOCABULARY) == 12
    assert output.vocabulary_size_by_name(features.ITEM_VOCABULARY) == 20
    genres = np.stack([row["item_genres"] for row in rows])
    assert genres.shape == (200, features.GENRE_BUCKETS)
    assert set(genres.sum(axis=1)) <= {1.0, 2.0}


def test_training_steps_lower_the_loss(transformed):
    rows, output = transformed
    model = TwoTowerModel(12, 20, ModelConfig(embedding_dim=8))
    model.compile(
        optimizer=tf.keras.optimizers.Adagrad(0.05, jit_compile=False)
    )
    batch = _batch(rows)
    before = float(model.compute_loss(batch))
    for _ in range(5):
        model.train_step(batch)
    after = float(model.compute_loss(batch))
    assert after < before


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    corrected=st.booleans(),
    weighted=st.booleans(),
)
def test_loss_is_tfrs_retrieval_loss(batch, seed, corrected, weighted):
    rng = np.random.default_rng(seed)
    users = tf.constant(rng.normal(size=(batch, 4)), tf.float32)
    items = tf.constant(rng.normal(size=(batch, 4)), tf.float32)
    # Below TFRS's floor of 1e-6 too, where both clip.
    probability = tf.constant(10.0 ** rng.uniform(-8, 0, batch), tf.float32)
    weight = tf.constant(rng.uniform(0, 2, batch), tf.float32)
    kwargs = {
        "sample_weight": weight if weighted else None,
        "candidate_sampling_probability": probability if corrected else None,
    }
    expected = tfrs.tasks.Retrieval()(users, items, **kwargs)
    loss = in_batch_softmax_loss(
        users,
        items,
        item_sampling_probability=kwargs["candidate_sampling_probability"],
        sample_weight=kwargs["sample_weight"],
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


class _BranchesOnATensor(TwoTowerModel):
    """A loss only AutoGraph can trace: `len` of a symbolic tensor."""

    def compute_loss(self, inputs, training=False):
        if len(tf.shape(inputs["user_index"])) == 2:
            return super().compute_loss(inputs, training)
        return tf.constant(0.0)


def _compiled(model_class):
    model = model_class(12, 20, ModelConfig(embedding_dim=8))
    model.compile(
        optimizer=tf.keras.optimizers.Adagrad(0.05, jit_compile=False)
    )
    return model


def test_fit_traces_its_step_without_autograph(transformed):
    rows, _ = transformed
    dataset = tf.data.Dataset.from_tensor_slices(_batch(rows)).batch(64)
    history = _compiled(TwoTowerModel).fit(dataset, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    with pytest.raises(TypeError, match="symbolic Tensor"):
        _compiled(_BranchesOnATensor).fit(dataset, epochs=1, verbose=0)


def test_the_trainers_compile_traces_the_training_step_once(transformed):
    rows, _ = transformed
    dataset = tf.data.Dataset.from_tensor_slices(_batch(rows)).batch(64)
    # Keras makes the optimizer's slots in the first step, and a function
    # that makes variables is traced twice.
    stock = _compiled(TwoTowerModel)
    stock.fit(dataset, epochs=2, verbose=0)
    assert stock.train_function.experimental_get_tracing_count() == 2
    model = TwoTowerModel(12, 20, ModelConfig(embedding_dim=8))
    _build(model, _batch(rows[:4]))
    compile_model(model)
    model.fit(dataset, epochs=2, verbose=0)
    assert model.train_function.experimental_get_tracing_count() == 1


def test_validation_loss_is_the_mean_over_every_row(transformed):
    rows, _ = transformed
    model = _compiled(TwoTowerModel)
    # 200 rows in batches of 64: a last batch of 8, whose loss alone Keras
    # would otherwise report.
    dataset = tf.data.Dataset.from_tensor_slices(_batch(rows)).batch(64)
    last = float(model.compute_loss(_batch(rows[192:])))
    summed = sum(float(model.compute_loss(b)) for b in dataset)
    reported = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    expected = summed / len(rows)
    assert reported == pytest.approx(expected, rel=1e-5)
    assert reported != pytest.approx(last, rel=1e-2)
    # Each evaluation starts its mean afresh (each epoch's, in a fit).
    again = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert again == pytest.approx(reported, rel=1e-6)


def test_export_serves_top_k_item_ids(transformed, tmp_path):
    rows, output = transformed
    model = TwoTowerModel(12, 20, ModelConfig(embedding_dim=8))
    model.compile(
        optimizer=tf.keras.optimizers.Adagrad(0.05, jit_compile=False)
    )
    dataset = tf.data.Dataset.from_tensor_slices(_batch(rows)).batch(64)
    model.fit(dataset, epochs=1, verbose=0)
    catalogue = collect_catalogue(iter(dataset), num_items=20)
    vocabulary = output.vocabulary_by_name(features.ITEM_VOCABULARY)
    ids = [vocabulary[i].decode() for i in catalogue["item_index"]]
    vectors = model.item_tower(
        {k: tf.constant(v) for k, v in catalogue.items()}
    ).numpy()
    export_dir = str(tmp_path / "model")
    export_retrieval_model(model, output, ids, vectors, export_dir, top_k=5)

    loaded = tf.saved_model.load(export_dir)
    result = loaded.signatures["serving_default"](
        user_id=tf.constant(["u1", "never-seen"]),
        user_age=tf.constant([21, 0], tf.int64),
        user_occupation=tf.constant(["student", "unknown"]),
    )
    item_ids = result["item_ids"].numpy()
    scores = result["scores"].numpy()
    assert item_ids.shape == (2, 5)
    assert {i.decode() for i in item_ids.ravel()} <= set(ids)
    assert np.all(np.diff(scores, axis=1) <= 0), "scores must be sorted"

    # The evaluation signatures agree with each other: the label column of
    # a known item holds the same score that serving gives that item.
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    key: (
                        tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=value)
                        )
                        if isinstance(value[0], bytes)
                        else tf.train.Feature(
                            float_list=tf.train.FloatList(value=value)
                        )
                        if isinstance(value[0], float)
                        else tf.train.Feature(
                            int64_list=tf.train.Int64List(value=value)
                        )
                    )
                    for key, value in row.items()
                }
            )
        ).SerializeToString()
        for row in _rows(seed=1)[:3]
    ]
    scored = loaded.signatures["score_catalogue"](
        examples=tf.constant(examples)
    )["scores"].numpy()
    labels = loaded.signatures["transformed_labels"](
        examples=tf.constant(examples)
    )["catalogue_position"].numpy()
    # Catalogue columns, padding up to the largest cutoff, the outside slot.
    assert scored.shape == (3, 100 + 1)
    assert np.all(labels < len(ids))
    assert np.all(scored[:, -1] < scored[:, :-1].min(axis=1))
    assert np.all(scored[:, len(ids) :] < scored[:, : len(ids)].min())


def test_unknown_users_get_the_popular_items_known_users_their_own(
    transformed, tmp_path
):
    rows, output = transformed
    # Untrained towers, without an item bias: a random bias, the same for
    # every user, could outweigh what the features say.
    model = TwoTowerModel(12, 20, ModelConfig(embedding_dim=8, item_bias=False))
    batch = _batch(rows)
    model.user_tower(batch)
    catalogue = collect_catalogue([batch], num_items=20)
    vocabulary = output.vocabulary_by_name(features.ITEM_VOCABULARY)
    ids = [vocabulary[i].decode() for i in catalogue["item_index"]]
    vectors = model.item_tower(
        {k: tf.constant(v) for k, v in catalogue.items()}
    ).numpy()
    popularity = np.arange(len(ids), dtype=np.float64)[::-1] ** 2
    request = {
        "user_id": tf.constant(["u1", "never-seen", "also-new"]),
        "user_age": tf.constant([21, 30, 60], tf.int64),
        "user_occupation": tf.constant(["student", "writer", "student"]),
    }

    def served(weight, with_popularity=True):
        export_dir = str(tmp_path / f"model-{weight}-{with_popularity}")
        export_retrieval_model(
            model,
            output,
            ids,
            vectors,
            export_dir,
            top_k=5,
            num_users=12,
            catalogue_popularity=popularity if with_popularity else None,
            cold_user_feature_weight=weight,
        )
        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        result = serve(**request)
        return [[i.decode() for i in r] for r in result["item_ids"].numpy()]

    plain = served(0.0, with_popularity=False)
    popular = served(0.0)
    blended = served(2.0)

    # Known users are scored by the towers alone.
    assert popular[0] == blended[0] == plain[0]
    # Unknown users: the most popular items, reordered by their features.
    assert popular[1] == popular[2] == ids[:5]
    assert blended[1] != blended[2]
    assert plain[1] != ids[:5] or plain[2] != ids[:5]


_MIRRORED_TRAINING = """
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
from models.model import (
    ModelConfig,
    TwoTowerModel,
    compile_model,
    in_batch_softmax_loss,
)
from models.trainer import distribution_strategy

devices = [d.name for d in tf.config.list_logical_devices("CPU")]
strategy = distribution_strategy(devices)
batch = dict(np.load(sys.argv[1]))
dataset = tf.data.Dataset.from_tensor_slices(batch).batch(200)
with strategy.scope():
    model = TwoTowerModel(12, 20, ModelConfig(embedding_dim=8))
    model.compile(
        optimizer=tf.keras.optimizers.Adagrad(0.05, jit_compile=False)
    )
before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
model.fit(dataset, epochs=5, verbose=0)
after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "before": float(before),
    "after": float(after),
}))
"""


def test_training_mirrors_over_several_devices(transformed, tmp_path):
    """Two logical CPUs stand in for two GPUs: the model trains mirrored."""
    rows, _ = transformed
    path = tmp_path / "batch.npz"
    np.savez(path, **{k: v.numpy() for k, v in _batch(rows).items()})

    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED_TRAINING, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["after"] < result["before"]


def test_one_device_or_none_trains_under_the_default_strategy():
    assert distribution_strategy([]) is tf.distribute.get_strategy()
    assert distribution_strategy(["/gpu:0"]) is tf.distribute.get_strategy()


_LOAD_AND_SERVE = """
import json, sys
import models  # the project's package registers what the model needs
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
result = serve(
    user_id=tf.constant(["u1", "u2", "never-seen"]),
    user_age=tf.constant([21, 22, 32], tf.int64),
    user_occupation=tf.constant(["student"] * 3),
)
print(json.dumps([[i.decode() for i in r] for r in result["item_ids"].numpy()]))
"""


def test_a_scann_index_serves_nearly_what_brute_force_does(
    transformed, tmp_path
):
    rows, output = transformed
    model = TwoTowerModel(12, 20, ModelConfig(embedding_dim=8, item_bias=False))
    model.user_tower(_batch(rows))
    # A catalogue large enough for ScaNN to partition, in clusters as
    # trained item vectors are (unclustered noise is ScaNN's worst case).
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, 8))
    vectors = (
        np.repeat(centres, 100, axis=0) + 0.3 * rng.normal(size=(3000, 8))
    ).astype(np.float32)
    ids = [f"i{n}" for n in range(len(vectors))]
    popularity = rng.pareto(1.5, len(ids))
    users = [f"u{n}" for n in range(12)] + ["never-seen", "also-new"]
    request = {
        "user_id": tf.constant(users),
        "user_age": tf.constant([20 + n for n in range(len(users))], tf.int64),
        "user_occupation": tf.constant(["student"] * len(users)),
    }
    lists = {}
    for retrieval in ("brute_force", "scann"):
        export_dir = str(tmp_path / retrieval)
        export_retrieval_model(
            model,
            output,
            ids,
            vectors,
            export_dir,
            top_k=10,
            num_users=12,
            catalogue_popularity=popularity,
            retrieval=retrieval,
        )
        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        lists[retrieval] = [
            [i.decode() for i in r]
            for r in serve(**request)["item_ids"].numpy()
        ]

    exact, approximate = lists["brute_force"], lists["scann"]
    overlap = np.mean(
        [
            len(set(a) & set(b)) / 10
            for a, b in zip(exact[:12], approximate[:12], strict=True)
        ]
    )
    # ScaNN trains its partitions afresh on each build: 0.84 to 1.0 over
    # 40 builds here. A broken index shares next to nothing with brute
    # force (a random list: 10 in 3000).
    assert overlap >= 0.75, overlap
    # Unknown users are served exactly: popularity and features.
    assert approximate[12:] == exact[12:]
    # A fresh process with TensorFlow and this package loads and serves it.
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_SERVE, str(tmp_path / "scann")],
        capture_output=True,
        text=True,
        check=True,
    )
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served[:2] == approximate[1:3]
    assert served[2] == approximate[12]


def test_an_unknown_retrieval_method_is_refused():
    with pytest.raises(ValueError, match="retrieval must be one of"):
        ModelConfig(retrieval="exhaustive")


_COUNTS = st.lists(
    st.integers(min_value=1, max_value=10_000), min_size=2, max_size=30
)


@settings(max_examples=50, deadline=None)
@given(counts=_COUNTS, recent=st.data())
def test_the_popularity_shift_follows_each_items_recent_share(counts, recent):
    counts = np.array(counts, np.float64)
    now = np.array(
        recent.draw(
            st.lists(
                st.floats(min_value=0.0, max_value=1e4),
                min_size=len(counts),
                max_size=len(counts),
            )
        )
    )

    # Recent shares equal to the training shares shift nothing.
    np.testing.assert_allclose(
        popularity_shift(counts, 3.0 * counts), 0.0, atol=1e-5
    )
    if not now.sum():
        assert not popularity_shift(counts, now).any()
        return
    shift = popularity_shift(counts, now, smoothing=0.1)
    # Items no one has touched lately are ranked down by the smoothing's
    # share, not ruled out.
    quiet = now == 0
    np.testing.assert_allclose(shift[quiet], np.log(0.1 / 1.1), rtol=1e-4)
    # More recent interactions, the rest unchanged: a larger shift (unless
    # the item already holds all, or all but a rounding error, of them).
    busier = now.copy()
    busier[0] += now.sum() + 1.0
    if now[1:].sum() > 1e-3 * now.sum():
        assert popularity_shift(counts, busier)[0] > shift[0]
    # Items gaining share are shifted up, those losing it down.
    share_now = now / now.sum()
    share_before = counts / counts.sum()
    gained = share_now > share_before * 1.01
    lost = share_now < share_before * 0.99
    assert (shift[gained] > 0).all() and (shift[lost] < 0).all()


def test_a_warm_starts_item_shares_count_what_it_trains_on():
    # Items 5 and 6 are out-of-vocabulary rows of a 5-item vocabulary.
    index = np.array([[0], [2], [2], [5], [6], [2], [4]], np.int64)
    batches = tf.data.Dataset.from_tensor_slices(
        {"item_index": index, "rating": np.ones(len(index), np.float32)}
    ).batch(3)

    counts, rows = _item_counts(batches, num_items=5)
    assert counts.tolist() == [1, 0, 3, 0, 1]
    assert rows == len(index)

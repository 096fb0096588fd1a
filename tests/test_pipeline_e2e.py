"""The local pipeline end to end on tiny generated spans (slow)."""

import glob
import math
import os

import pandas as pd
import pytest
import tensorflow as tf

from components.interaction_delta import executor
from models import features, warm_start
from models.model import ModelConfig
from pipeline import snapshots, synthetic
from pipeline.config import PipelineConfig
from pipeline.local import run_span

pytestmark = pytest.mark.slow

_TINY = synthetic.SyntheticConfig(
    seed=3,
    num_spans=2,
    initial_users=150,
    initial_items=80,
    interactions_per_user=10.0,
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.write_history(root, _TINY)
    return root


def _train_rows(config: PipelineConfig) -> pd.DataFrame:
    """The training split of the newest ExampleGen run of a workdir."""
    runs = glob.glob(
        os.path.join(
            config.pipeline_root, "TemporalExampleGen", "examples", "*"
        )
    )
    newest = max(runs, key=lambda path: int(os.path.basename(path)))
    files = sorted(glob.glob(os.path.join(newest, "Split-train", "*")))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return executor.decode_examples(
        list(records.as_numpy_iterator()), newest, 0
    )


def test_run_span_pushes_a_model_that_answers_top_k(tiny_data, tmp_path):
    lines = []
    config = PipelineConfig.local(tmp_path, tiny_data, span=1)

    report = run_span(config, printer=lines.append)

    snapshot = snapshots.read_span(tiny_data, 1)
    assert report.span == 1
    assert report.rows == len(snapshot)
    assert report.trained
    assert report.delta["previous_span"] is None
    assert report.delta["pairs"]["added"] == len(snapshot)
    # The vocabularies hold the ids of the training rows: the newest rows
    # are held out, and a user seen only there is not known yet.
    train = _train_rows(config)
    assert len(train) < len(snapshot)
    assert report.user_vocabulary == train["user_id"].nunique()
    assert report.item_vocabulary == train["item_id"].nunique()
    assert 0.0 < report.recall[10] <= report.recall[50] <= report.recall[100]
    assert report.blessed
    assert report.pushed_model is not None
    assert os.path.dirname(report.pushed_model) == config.serving_root
    assert any("Trainer" in line for line in lines)
    assert any("Pusher" in line for line in lines)

    model = tf.saved_model.load(report.pushed_model)
    user = snapshot.iloc[0]
    result = model.signatures["serving_default"](
        user_id=tf.constant([user["user_id"]]),
        user_age=tf.constant([int(user["user_age"])], tf.int64),
        user_occupation=tf.constant([user["user_occupation"]]),
    )
    item_ids = {i.decode() for i in result["item_ids"].numpy().ravel()}
    assert len(item_ids) == min(100, report.item_vocabulary)
    assert item_ids <= set(snapshot["item_id"])


def _pairs(frame):
    return {
        (u, i): r
        for u, i, r in frame[["user_id", "item_id", "rating"]].itertuples(
            index=False
        )
    }


# Beam's DirectRunner with two worker processes: nothing a component does
# may depend on running in the process that built the pipeline, as on a
# distributed runner.
_TWO_PROCESSES = (
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
)


def test_the_delta_of_the_next_span_drives_training(tiny_data, tmp_path):
    first = run_span(
        PipelineConfig.local(
            tmp_path, tiny_data, span=1, beam_args=_TWO_PROCESSES
        )
    )
    lines = []

    second = run_span(
        PipelineConfig.local(
            tmp_path, tiny_data, span=2, beam_args=_TWO_PROCESSES
        ),
        lines.append,
    )

    assert any("InteractionDelta" in line for line in lines)
    before = _pairs(snapshots.read_span(tiny_data, 1))
    after = _pairs(snapshots.read_span(tiny_data, 2))
    pairs = second.delta["pairs"]
    assert second.delta["previous_span"] == 1
    assert pairs["added"] == len(after.keys() - before.keys())
    assert pairs["removed"] == len(before.keys() - after.keys())
    assert pairs["modified"] == sum(
        after[p] != before[p] for p in after.keys() & before.keys()
    )
    assert second.trained and second.pushed_model != first.pushed_model

    # Span 1 starts cold; span 2 warm-starts from it on the delta, and
    # every id keeps its index.
    assert first.training["mode"] == "cold"
    assert first.training["reason"] == "no base model"
    training = second.training
    assert training["mode"] == "warm", training
    assert training["base_span"] == 1
    assert training["training_set"].startswith("delta")
    assert (first.training["optimizer"], training["optimizer"]) == (
        "fresh",
        "carried over",
    )
    held_out = second.delta["held_out"]
    assert 0 < held_out["added"] < pairs["added"]
    assert training["examples"] == (
        pairs["added"]
        - held_out["added"]
        + pairs["modified"]
        - held_out["modified"]
        + pairs["released"]
        + second.delta["replay"]["pairs"]
    )
    # A cold start passes over the snapshot `epochs` times; a warm start
    # passes over the delta `warm_epochs` times.
    model_config = ModelConfig()
    assert first.training["epochs"] == model_config.epochs
    assert training["epochs"] == model_config.warm_epochs
    assert training["steps"] == model_config.warm_epochs * math.ceil(
        training["examples"] / model_config.batch_size
    )
    for summary in (first.training, training):
        assert 0 < summary["first_step_seconds"] <= summary["seconds"]
    for name, size in (
        ("user_id", first.user_vocabulary),
        ("item_id", first.item_vocabulary),
    ):
        old = features.read_vocabulary(
            warm_start.vocabulary_path(first.pushed_model, name)
        )
        new = features.read_vocabulary(
            warm_start.vocabulary_path(second.pushed_model, name)
        )
        assert len(old) == size
        assert new[: len(old)] == old
        assert training["carried"][name] == len(old)
        assert training["new"][name] == len(new) - len(old)
    assert training["new"]["item_id"] > 0

    # Retired items are never returned; items new in span 2 can be.
    snapshot = snapshots.read_span(tiny_data, 2)
    users = snapshot.drop_duplicates("user_id")
    model = tf.saved_model.load(second.pushed_model)
    result = model.signatures["serving_default"](
        user_id=tf.constant(users["user_id"].tolist()),
        user_age=tf.constant(users["user_age"].tolist(), tf.int64),
        user_occupation=tf.constant(users["user_occupation"].tolist()),
    )
    returned = {i.decode() for i in result["item_ids"].numpy().ravel()}
    old_items = {i for i, _ in before}
    active = set(snapshot["item_id"])
    assert returned <= active
    assert old_items - active, "the span retires no item"
    assert returned & (active - old_items)

    # The same span again diffs against span 1 once more; a threshold above
    # its delta skips training and pushing.
    changed = pairs["added"] + pairs["removed"] + pairs["modified"]
    config = PipelineConfig.local(
        tmp_path, tiny_data, span=2, min_delta_pairs=changed + 1
    )
    lines.clear()

    skipped = run_span(config, lines.append)

    assert skipped.delta == second.delta
    assert not skipped.trained
    assert skipped.pushed_model is None
    assert any(
        line.split()[:2] == ["WarmStartTrainer", "skipped"] for line in lines
    )
    assert not any(line.split()[:2] == ["Pusher", "done"] for line in lines)
    assert sorted(os.listdir(config.serving_root)) == sorted(
        os.path.basename(r.pushed_model) for r in (first, second)
    )


def test_a_span_that_breaks_the_schema_stops_before_transform(
    tiny_data, tmp_path
):
    bad_root = tmp_path / "data"
    frame = snapshots.read_span(tiny_data, 1)
    frame["rating"] = frame["rating"].astype(str)
    frame.loc[frame.index[::7], "rating"] = "five"
    path = snapshots.span_dir(bad_root, 1)
    path.mkdir(parents=True)
    frame.to_csv(path / "interactions.csv", index=False)
    config = PipelineConfig.local(tmp_path / "work", bad_root, span=1)

    with pytest.raises(Exception, match="rating"):
        run_span(config)

    for component in ("InteractionDelta", "Transform"):
        assert not os.path.exists(os.path.join(config.pipeline_root, component))
    assert not os.path.exists(config.serving_root)

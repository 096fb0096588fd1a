"""InteractionDelta: the diff's properties, its edge cases, its executor."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.interaction_delta import diff, executor, testing
from pipeline.snapshots import COLUMNS


def _frame(rows) -> pd.DataFrame:
    """Snapshot rows from (user, item, rating, timestamp) tuples."""
    frame = pd.DataFrame(
        {
            "user_id": [f"u{r[0]}" for r in rows],
            "item_id": [f"i{r[1]}" for r in rows],
            "rating": [float(r[2]) for r in rows],
            "timestamp": [int(r[3]) for r in rows],
            "item_genres": ["Drama"] * len(rows),
            "item_year": [1990 + r[1] for r in rows],
            "user_age": [20 + r[0] for r in rows],
            "user_occupation": ["other"] * len(rows),
        }
    )
    return frame.astype(diff.empty_snapshot().dtypes.to_dict())


_ROWS = st.lists(
    st.tuples(
        st.integers(0, 6),
        st.integers(0, 6),
        st.sampled_from([1.0, 2.5, 4.0, 5.0]),
        st.integers(0, 3),
    ),
    max_size=40,
)


def _ratings(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {
        (u, i): r
        for u, i, r in frame[["user_id", "item_id", "rating"]].itertuples(
            index=False
        )
    }


def _apply(previous: pd.DataFrame, delta: dict[str, pd.DataFrame]) -> dict:
    """The previous snapshot's ratings with the delta applied."""
    ratings = _ratings(previous)
    for pair in _ratings(delta["removed"]):
        del ratings[pair]
    for split in ("added", "modified"):
        for pair, rating in _ratings(delta[split]).items():
            assert (pair in ratings) == (split == "modified")
            ratings[pair] = rating
    return ratings


def _flagged(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with the held-out flag that `testing.write_examples` gives:
    the second half of the rows is in the held-out split."""
    eval_rows = np.array_split(np.arange(len(frame)), 2)[1]
    return frame.assign(held_out=np.isin(np.arange(len(frame)), eval_rows))


def _newest(frame: pd.DataFrame) -> pd.DataFrame:
    """An independent reading of "the newest timestamp wins"."""
    return diff.deduplicate(frame)[0]


@settings(max_examples=200, deadline=None)
@given(previous_rows=_ROWS, current_rows=_ROWS, seed=st.integers(0, 99))
def test_applying_the_delta_to_the_previous_snapshot_gives_the_current(
    previous_rows, current_rows, seed
):
    previous = _newest(_frame(previous_rows))
    current = _frame(current_rows)

    delta = diff.diff_shard(previous, current)

    expected = {}
    for row in sorted(current_rows, key=lambda r: (r[3], r[2])):
        expected[(f"u{row[0]}", f"i{row[1]}")] = float(row[2])
    parts = {
        "added": delta.added,
        "removed": delta.removed,
        "modified": delta.modified,
    }
    assert _apply(previous, parts) == expected
    assert len(delta.added) + len(delta.modified) + len(delta.unchanged) == (
        len(expected)
    )
    assert len(delta.removed) + len(delta.modified) + len(delta.unchanged) == (
        len(previous)
    )
    assert delta.duplicates == len(current) - len(expected)
    assert len(delta.rating_changes) == len(delta.modified)
    assert np.all(delta.rating_changes != 0)

    shuffled = current.sample(frac=1.0, random_state=seed)
    again = diff.diff_shard(previous, shuffled)
    for name in ("current", "added", "removed", "modified", "unchanged"):
        pd.testing.assert_frame_equal(
            getattr(again, name).reset_index(drop=True),
            getattr(delta, name).reset_index(drop=True),
        )


def test_the_newest_timestamp_wins_whatever_the_row_order():
    rows = [(1, 1, 2.0, 5), (1, 1, 4.0, 9), (1, 1, 1.0, 7), (2, 1, 3.0, 1)]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        current, dropped = diff.deduplicate(_frame([rows[i] for i in order]))
        assert dropped == 2
        assert _ratings(current) == {("u1", "i1"): 4.0, ("u2", "i1"): 3.0}


def test_shards_and_replay_fractions_do_not_depend_on_the_process():
    frame = _frame([(u, i, 1.0, 0) for u in range(30) for i in range(5)])
    shards = diff.shard_of(frame["user_id"].to_numpy(), 4)
    fractions = diff.pair_fraction(frame)

    assert set(shards) == {0, 1, 2, 3}
    # Users, not pairs, are sharded.
    assert frame.groupby(shards)["user_id"].nunique().sum() == 30
    assert np.all((fractions >= 0) & (fractions < 1))
    assert len(np.unique(fractions)) == len(frame)
    np.testing.assert_array_equal(
        diff.pair_fraction(frame.iloc[::-1])[::-1], fractions
    )
    np.testing.assert_array_equal(
        diff.shard_of(frame["user_id"].to_numpy()[::-1], 4)[::-1], shards
    )


# The executor, on Beam's DirectRunner.


def _run(tmp_path, name, frame, span, previous=(), **kw):
    examples = testing.write_examples(frame, str(tmp_path / f"{name}-in"), span)
    return testing.run_executor(
        examples, list(previous), str(tmp_path / name), **kw
    )


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(previous_rows=_ROWS, current_rows=_ROWS)
def test_executor_delta_reproduces_the_snapshot_and_is_repeatable(
    tmp_path_factory, previous_rows, current_rows
):
    tmp_path = tmp_path_factory.mktemp("delta")
    previous = _frame(previous_rows)
    current = _frame(current_rows)

    first = _run(tmp_path, "first", previous, 1)
    second = _run(tmp_path, "second", current, 2, first["index"])
    again = _run(tmp_path, "again", current, 2, first["index"])

    delta = testing.read_delta(second)
    assert _apply(_newest(previous), delta) == _ratings(_newest(current))
    summary = testing.read_summary(second)
    pairs = summary["pairs"]
    assert (
        pairs["added"] + pairs["modified"] + pairs["unchanged"]
        == (pairs["current"])
    )
    assert pairs["current"] + summary["duplicates_dropped"] == len(current)
    assert summary["previous_span"] == 1
    assert sum(summary["rating_changes"].values()) == pairs["modified"]
    assert len(delta["replay"]) == summary["replay"]["pairs"]
    # `write_examples` puts the second half of the rows in the held-out
    # "eval" split: those pairs are flagged, and never replayed; pairs held
    # out by the first run and not by the second are released.
    expected = diff.diff_shard(_newest(_flagged(previous)), _flagged(current))
    held_out = summary["held_out"]
    assert held_out == {
        "added": int(expected.added["held_out"].sum()),
        "modified": int(expected.modified["held_out"].sum()),
    }
    assert _ratings(delta["released"]) == _ratings(expected.released)
    assert pairs["released"] == len(expected.released)
    unchanged = expected.unchanged.drop(expected.released.index)
    replayable = unchanged[~unchanged["held_out"]]
    trainable = (
        (pairs["added"] - held_out["added"] + pairs["modified"])
        - held_out["modified"]
        + pairs["released"]
    )
    assert len(delta["replay"]) == min(len(replayable), trainable)
    assert set(_ratings(delta["replay"])) <= set(_ratings(replayable))
    assert testing.read_summary(again) == summary
    for split, frame in testing.read_delta(again).items():
        pd.testing.assert_frame_equal(frame, delta[split])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("base")
    frame = _frame(
        [(u, i, 1 + (u + i) % 5, u) for u in range(8) for i in (1, 2)]
    )
    return frame, _run(tmp_path, "base", frame, 1, num_shards=3)


def test_the_first_run_adds_everything(base_run):
    frame, outputs = base_run
    summary = testing.read_summary(outputs)

    assert summary["previous_span"] is None
    assert summary["pairs"] == {
        "added": 16,
        "removed": 0,
        "modified": 0,
        "unchanged": 0,
        "released": 0,
        "current": 16,
    }
    assert summary["users"] == {"current": 8, "new": 8, "vanished": 0}
    assert summary["items"] == {"current": 2, "new": 2, "vanished": 0}
    # Half of the rows come from the held-out "eval" split.
    assert summary["held_out"] == {"added": 8, "modified": 0}
    assert len(testing.read_delta(outputs)["added"]) == 16
    properties = outputs["summary"][0].mlmd_artifact.custom_properties
    assert properties["changed_pairs"].int_value == 16


def test_the_same_snapshot_again_is_an_empty_delta(base_run, tmp_path):
    frame, base = base_run

    outputs = _run(tmp_path, "same", frame, 2, base["index"], num_shards=3)

    summary = testing.read_summary(outputs)
    assert summary["pairs"]["unchanged"] == 16
    assert summary["pairs"]["added"] == summary["pairs"]["removed"] == 0
    assert summary["replay"]["pairs"] == 0
    assert all(len(f) == 0 for f in testing.read_delta(outputs).values())
    properties = outputs["summary"][0].mlmd_artifact.custom_properties
    assert properties["changed_pairs"].int_value == 0


def test_an_empty_snapshot_removes_everything(base_run, tmp_path):
    _, base = base_run

    outputs = _run(tmp_path, "empty", _frame([]), 2, base["index"])

    summary = testing.read_summary(outputs)
    assert summary["pairs"]["removed"] == 16
    assert summary["users"] == {"current": 0, "new": 0, "vanished": 8}
    assert summary["items"] == {"current": 0, "new": 0, "vanished": 2}
    assert len(testing.read_delta(outputs)["removed"]) == 16


def test_a_new_shard_count_still_finds_every_previous_pair(base_run, tmp_path):
    frame, base = base_run
    changed = frame.copy()
    changed.loc[0, "rating"] = 5.0 if changed.loc[0, "rating"] != 5.0 else 1.0

    outputs = _run(tmp_path, "reshard", changed, 2, base["index"], num_shards=5)

    pairs = testing.read_summary(outputs)["pairs"]
    assert (pairs["modified"], pairs["unchanged"], pairs["added"]) == (1, 15, 0)


def test_duplicated_pairs_keep_the_newest_row(base_run, tmp_path):
    frame, base = base_run
    newer = frame.copy()
    newer["timestamp"] += 100
    newer["rating"] = 6.0 - newer["rating"]

    outputs = _run(tmp_path, "dup", pd.concat([newer, frame]), 2, base["index"])

    summary = testing.read_summary(outputs)
    assert summary["duplicates_dropped"] == 16
    assert summary["pairs"]["current"] == 16
    modified = testing.read_delta(outputs)["modified"]
    assert _ratings(modified) == {
        k: v for k, v in _ratings(newer).items() if v != 3.0
    }


def test_a_retired_item_that_comes_back_is_in_the_catalogue_again(
    base_run, tmp_path
):
    frame, base = base_run
    retired = frame[frame["item_id"] != "i2"]

    gone = _run(tmp_path, "gone", retired, 2, base["index"])
    back = _run(tmp_path, "back", frame, 3, gone["index"])

    def catalogue(outputs):
        path = os.path.join(outputs["catalogue"][0].uri, "catalogue.csv")
        return set(pd.read_csv(path)["item_id"])

    assert catalogue(base) == {"i1", "i2"}
    assert catalogue(gone) == {"i1"}
    assert testing.read_summary(gone)["items"]["vanished"] == 1
    assert catalogue(back) == {"i1", "i2"}
    summary = testing.read_summary(back)
    assert summary["items"]["new"] == 1
    assert summary["pairs"]["added"] == 8


def test_holdout_rows_carry_cohorts_and_last_holdout_is_released(
    base_run, tmp_path
):
    frame, base = base_run
    # A new user with a known item and a known user with a new item, both
    # in the second half of the rows: the held-out split.
    current = pd.concat(
        [frame, _frame([(9, 1, 3.0, 9), (2, 3, 3.0, 9)])], ignore_index=True
    )

    outputs = _run(tmp_path, "cohorts", current, 2, base["index"])

    holdout = testing.read_holdout(outputs)
    expected = _flagged(current)
    expected = expected[expected["held_out"]]
    users, items = set(frame["user_id"]), set(frame["item_id"])
    assert list(zip(holdout["user_id"], holdout["item_id"], strict=True)) == (
        sorted(zip(expected["user_id"], expected["item_id"], strict=True))
    )
    for row in holdout.itertuples(index=False):
        assert row.user_cohort == (
            "returning" if row.user_id in users else "new"
        )
        assert row.item_cohort == ("known" if row.item_id in items else "new")
    assert set(holdout["user_cohort"]) == {"new", "returning"}
    assert set(holdout["item_cohort"]) == {"new", "known"}
    summary = testing.read_summary(outputs)
    assert summary["holdout"] == {
        "pairs": len(holdout),
        "users": {"new": 1, "returning": len(holdout) - 1},
        "items": {"new": 1, "known": len(holdout) - 1},
    }
    # Row 8 was held out in span 1 and is trained on now.
    released = testing.read_delta(outputs)["released"]
    assert _ratings(released) == _ratings(frame.iloc[[8]])


def test_a_rerun_of_a_span_diffs_against_the_span_before(base_run, tmp_path):
    frame, base = base_run
    changed = frame.iloc[3:]

    first = _run(tmp_path, "first", changed, 2, base["index"])
    # The resolver now hands over span 2's own index.
    rerun = _run(tmp_path, "rerun", changed, 2, first["index"])

    assert testing.read_summary(rerun) == testing.read_summary(first)
    assert testing.read_summary(rerun)["previous_span"] == 1


def _model_of_span(tmp_path, span: int) -> standard_artifacts.Model:
    """A Model artifact that says, as `run_fn` writes it, its span."""
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / f"model-{span}")
    serving = path_utils.serving_model_path(model.uri)
    extra = os.path.join(serving, "assets.extra")
    os.makedirs(extra)
    with open(os.path.join(extra, "training_summary.json"), "w") as f:
        json.dump({"span": span}, f)
    return model


def test_the_delta_is_taken_against_the_snapshot_of_the_model_in_force(
    base_run, tmp_path
):
    frame, base = base_run
    second = _run(tmp_path, "second", frame.iloc[2:], 2, base["index"])
    third = pd.concat(
        [frame.iloc[2:], _frame([(9, 1, 3.0, 9)])], ignore_index=True
    )

    # Span 2's candidate was not blessed: span 1's model is still served.
    outputs = _run(
        tmp_path,
        "third",
        third,
        3,
        second["index"],
        base_model=[_model_of_span(tmp_path, 1)],
    )

    summary = testing.read_summary(outputs)
    assert summary["previous_span"] == 1
    assert outputs["delta"][0].get_int_custom_property("previous_span") == 1
    # Everything since span 1: its two removed pairs and the new one.
    assert summary["pairs"]["removed"] == 2
    assert summary["pairs"]["added"] == 1
    # Without a model, or when the model's span has no index in the chain,
    # the newest earlier snapshot it is.
    for models in ([], [_model_of_span(tmp_path / "x", 0)]):
        again = _run(
            tmp_path,
            f"again-{len(models)}",
            third,
            3,
            second["index"],
            base_model=models,
        )
        assert testing.read_summary(again)["previous_span"] == 2


def test_catalogue_popularity_weighs_recent_interactions_more(tmp_path):
    # i1: three old interactions; i2: two from the newest week.
    week = 7 * 24 * 3600
    rows = [(u, 1, 3.0, 0) for u in range(3)]
    rows += [(u, 2, 3.0, 4 * week) for u in range(2)]

    outputs = _run(tmp_path, "pop", _frame(rows), 1)

    path = os.path.join(outputs["catalogue"][0].uri, "catalogue.csv")
    catalogue = pd.read_csv(path)
    assert list(catalogue["item_id"]) == ["i2", "i1"]
    assert list(catalogue["pairs"]) == [2, 3]
    np.testing.assert_allclose(catalogue["popularity"], [2.0, 3.0 / 16])


def _drop_feature(record: bytes, name: str) -> bytes:
    example = tf.train.Example.FromString(record)
    del example.features.feature[name]
    return example.SerializeToString()


def test_a_missing_id_names_the_file_record_and_field(base_run, tmp_path):
    frame, base = base_run
    examples = testing.write_examples(frame, str(tmp_path / "in"), 2)
    split_dir = os.path.join(examples.uri, "Split-eval")
    (path,) = tf.io.gfile.glob(os.path.join(split_dir, "*"))
    records = list(tf.data.TFRecordDataset(path, "GZIP").as_numpy_iterator())
    records[3] = _drop_feature(records[3], "item_id")
    with tf.io.TFRecordWriter(path, "GZIP") as writer:
        for record in records:
            writer.write(record)

    with pytest.raises(Exception) as error:
        testing.run_executor(examples, base["index"], str(tmp_path / "out"))

    message = str(error.value)
    assert path in message
    assert "'item_id'" in message
    assert "record 3" in message
    for name in ("summary", "catalogue", "index", "delta"):
        written = [
            f for f in tf.io.gfile.walk(str(tmp_path / "out" / name)) if f[2]
        ]
        assert written == [], name


def _example(**overrides) -> bytes:
    """One serialized snapshot example, with features replaced or dropped."""
    values = {
        "user_id": b"u1",
        "item_id": b"i1",
        "rating": 3.0,
        "timestamp": 7,
        "item_genres": b"Drama",
        "item_year": 1990,
        "user_age": 30,
        "user_occupation": b"other",
    }
    values.update(overrides)
    example = tf.train.Example()
    for name, value in values.items():
        if value is None:
            continue
        feature = example.features.feature[name]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        elif isinstance(value, float):
            feature.float_list.value.append(value)
        else:
            feature.int64_list.value.extend(
                value if isinstance(value, list) else [value]
            )
    return example.SerializeToString()


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"user_id": b""}, "'user_id' is empty in record 1"),
        ({"user_id": None}, "'user_id' is missing in record 1"),
        ({"rating": b"five"}, "'rating' has the wrong type in record 1"),
        ({"timestamp": 1.5}, "'timestamp' has the wrong type in record 1"),
        ({"item_year": [1990, 1991]}, "'item_year' has several values"),
    ],
)
def test_decoding_rejects_a_bad_field(overrides, problem):
    records = [_example(), _example(**overrides)]

    with pytest.raises(executor.DeltaInputError, match=problem) as error:
        executor.decode_examples(records, "span-2/data.gz", 0)

    assert str(error.value).startswith("span-2/data.gz: feature")


def test_decoding_round_trips_the_snapshot_columns():
    frame = _frame([(1, 2, 3.5, 7), (2, 1, 1.0, 9)])
    records = list(executor.encode_examples(frame))

    decoded = executor.decode_examples(records, "f", 0)

    assert list(decoded.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(decoded, frame)


def test_summary_is_json_and_reads_in_three_lines(base_run):
    _, outputs = base_run
    summary = testing.read_summary(outputs)

    text = executor.describe_summary(summary)

    assert json.loads(json.dumps(summary)) == summary
    assert text.count("\n") == 2
    assert text.startswith("pairs +16 -0 ~0 =0 (of 16")

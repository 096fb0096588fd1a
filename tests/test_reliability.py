"""Reliability without a pipeline run: bad spans, pushes, damaged models.

Each bad input is checked where the pipeline checks it, in
`components.snapshot_check` (TemporalExampleGen calls it before anything
is written); the Pusher's executor is driven directly, also through a
process killed in the middle of a push; damaged copies of a real exported
model go through `components.base_model`. The end-to-end runs of the same
faults are in `test_reliability_e2e.py`.
"""

import ast
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts

from components import atomic_pusher, base_model, snapshot_check
from components.base_model import REQUIRED_SIGNATURES
from components.temporal_split import TemporalExampleGen, snapshot_checks
from models import warm_start
from models.model import ModelConfig
from pipeline import synthetic
from pipeline.config import PROJECT_ROOT, SCHEMA_DIR, PipelineConfig
from pipeline.pipeline import create_pipeline

pytestmark = pytest.mark.reliability

_SCHEMA = snapshot_check.read_schema(str(SCHEMA_DIR / "schema.pbtxt"))
_SMALL = synthetic.SyntheticConfig(
    seed=1,
    num_spans=2,
    initial_users=60,
    initial_items=40,
    interactions_per_user=6.0,
)
# The time of the checks: a day after the newest synthetic row.
_NOW = _SMALL.start_timestamp + 3 * _SMALL.span_seconds


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    synthetic.write_history(root, _SMALL)
    return root


def _text(root, span: int) -> pd.DataFrame:
    """A span's CSV as text, every value a string, as a data feed has it."""
    path = root / f"span-{span}" / "interactions.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _check(history, tmp_path, frame=None, text=None, **config):
    """Checks a span 2 written from `frame` (or `text`) after span 1."""
    path = tmp_path / "span-2.csv"
    if text is None:
        frame.to_csv(path, index=False)
    else:
        path.write_text(text)
    first = history / "span-1" / "interactions.csv"
    previous = snapshot_check.span_facts(1, [str(first)], "timestamp")
    return snapshot_check.check_span(
        2,
        [str(path)],
        _SCHEMA,
        snapshot_check.CheckConfig(**config),
        now=_NOW,
        previous=previous,
    ), str(path)


def test_a_good_span_passes_and_says_its_size_and_newest_time(history):
    files = [str(history / "span-2" / "interactions.csv")]
    first = history / "span-1" / "interactions.csv"
    previous = snapshot_check.span_facts(1, [str(first)], "timestamp")

    facts = snapshot_check.check_span(
        2, files, _SCHEMA, now=_NOW, previous=previous
    )

    rows = _text(history, 2)
    assert facts.rows == len(rows)
    assert facts.newest == int(rows["timestamp"].astype(int).max())
    assert facts.newest >= previous.newest
    assert facts.newest_at.file == files[0]


def _with(frame: pd.DataFrame, row: int, column: str, value: str):
    """A copy with one value changed; `row` counts the header as row 1."""
    frame = frame.copy()
    frame.loc[row - 2, column] = value
    return frame


# (what is wrong, how to make it, the row and field the message names)
_BAD_VALUES = [
    ("empty user id", "user_id", "", 5, "the value is empty"),
    ("null item id", "item_id", "NULL", 9, "the id is a null: 'NULL'"),
    ("null user id", "user_id", "None", 4, "the id is a null: 'None'"),
    ("rating is text", "rating", "five", 7, "not a finite number: 'five'"),
    ("rating is NaN", "rating", "nan", 3, "not a finite number: 'nan'"),
    ("rating off scale", "rating", "9.5", 6, "outside the schema's domain"),
    ("age is text", "user_age", "old", 8, "not a whole number: 'old'"),
    ("year is a float", "item_year", "1999.5", 2, "not a whole number"),
    ("missing genres", "item_genres", " ", 10, "the value is empty"),
]


@pytest.mark.parametrize(
    "column, value, row, problem",
    [case[1:] for case in _BAD_VALUES],
    ids=[case[0] for case in _BAD_VALUES],
)
def test_a_bad_value_names_the_span_file_row_and_field(
    history, tmp_path, column, value, row, problem
):
    frame = _with(_text(history, 2), row, column, value)

    with pytest.raises(snapshot_check.SnapshotError) as raised:
        _check(history, tmp_path, frame)

    path = str(tmp_path / "span-2.csv")
    message = str(raised.value)
    assert f"span 2, file {path}, row {row}, field {column}: " in message
    assert problem in message
    assert "nothing is trained or pushed" in message


def test_every_bad_row_is_counted_and_the_first_is_named(history, tmp_path):
    frame = _text(history, 2)
    frame.loc[frame.index[3::5], "rating"] = "five"

    with pytest.raises(snapshot_check.SnapshotError) as raised:
        _check(history, tmp_path, frame)

    count = len(frame.index[3::5])
    assert f"row 5, field rating: not a finite number: 'five' ({count:,}" in (
        str(raised.value)
    )


def test_rows_are_numbered_across_read_chunks(history, tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_check, "_CHUNK_ROWS", 7)
    frame = _with(_text(history, 2), 40, "user_age", "x")
    long_row = ",".join(frame.iloc[50]) + ",extra"
    text = frame.to_csv(index=False).splitlines()
    text[60 - 1] = long_row  # Row 60 gets a ninth field.

    with pytest.raises(snapshot_check.SnapshotError) as raised:
        _check(history, tmp_path, text="\n".join(text) + "\n")
    frame.to_csv(tmp_path / "ok.csv", index=False)
    with pytest.raises(snapshot_check.SnapshotError) as only_value:
        _check(history, tmp_path, frame)

    assert "row 60: the row has 9 fields, the header 8" in str(raised.value)
    assert "row 40, field user_age: not a whole number" in str(only_value.value)


def test_an_empty_span_is_refused(history, tmp_path):
    header = ",".join(_text(history, 2).columns) + "\n"

    with pytest.raises(snapshot_check.SnapshotError) as no_bytes:
        _check(history, tmp_path, text="")
    with pytest.raises(snapshot_check.SnapshotError) as header_only:
        _check(history, tmp_path, text=header)
    with pytest.raises(snapshot_check.SnapshotError) as no_files:
        snapshot_check.check_span(2, [], _SCHEMA, now=_NOW)

    assert "file" in str(no_bytes.value)
    assert "the file is empty: no header, no rows" in str(no_bytes.value)
    assert "span 2: no rows: the files hold a header only" in str(
        header_only.value
    )
    assert "span 2: no files" in str(no_files.value)


def test_a_missing_or_unknown_column_is_named(history, tmp_path):
    frame = _text(history, 2)

    with pytest.raises(snapshot_check.SnapshotError) as missing:
        _check(history, tmp_path, frame.drop(columns=["rating"]))
    with pytest.raises(snapshot_check.SnapshotError) as unknown:
        _check(history, tmp_path, frame.assign(coupon="x"))

    path = tmp_path / "span-2.csv"
    assert f"file {path}, row 1, field rating: column missing" in str(
        missing.value
    )
    assert f"file {path}, row 1, field coupon: column not in the schema" in (
        str(unknown.value)
    )


def test_a_column_of_another_type_than_the_schema_is_named(history, tmp_path):
    frame = _text(history, 2)
    whole = frame.assign(rating=frame["rating"].str.split(".").str[0])
    numbers = frame.assign(user_occupation="7")

    with pytest.raises(snapshot_check.SnapshotError) as as_int:
        _check(history, tmp_path, whole)
    with pytest.raises(snapshot_check.SnapshotError) as as_number:
        _check(history, tmp_path, numbers)

    assert "row 2, field rating: every value is a whole number" in str(
        as_int.value
    )
    assert "the schema says FLOAT" in str(as_int.value)
    assert "row 2, field user_occupation: every value is a number" in str(
        as_number.value
    )


def test_a_timestamp_in_the_future_is_refused_past_the_clock_skew(
    history, tmp_path
):
    soon = _with(_text(history, 2), 12, "timestamp", str(_NOW + 600))
    later = _with(_text(history, 2), 12, "timestamp", str(_NOW + 7200))

    facts, _ = _check(history, tmp_path, soon, max_clock_skew_seconds=3600)
    with pytest.raises(snapshot_check.SnapshotError) as raised:
        _check(history, tmp_path, later, max_clock_skew_seconds=3600)

    assert facts.newest == _NOW + 600
    assert "row 12, field timestamp: " in str(raised.value)
    assert "is in the future" in str(raised.value)


def test_a_snapshot_that_goes_back_in_time_is_refused(history, tmp_path):
    frame = _text(history, 2)
    first = _text(history, 1)
    oldest = int(first["timestamp"].astype(int).min())
    earlier = frame.assign(
        timestamp=(frame["timestamp"].astype(int) - 10 * 86400).clip(
            lower=oldest
        )
    )

    with pytest.raises(snapshot_check.SnapshotError) as raised:
        _check(history, tmp_path, earlier.astype(str))

    message = str(raised.value)
    assert "field timestamp: the newest timestamp" in message
    assert "is older than span 1's newest" in message
    assert "the snapshot goes back in time" in message


def test_duplicated_pairs_warn_a_few_and_stop_many(history, tmp_path, caplog):
    frame = _text(history, 2)
    few = pd.concat([frame, frame.iloc[:2]], ignore_index=True)
    every = pd.concat([frame, frame], ignore_index=True)

    facts, path = _check(history, tmp_path, few)
    warned = caplog.text
    with pytest.raises(snapshot_check.SnapshotError) as raised:
        _check(history, tmp_path, every)

    assert facts.rows == len(frame) + 2
    repeat = len(frame) + 2  # The first repeated row.
    assert f"file {path}, row {repeat}, field user_id, item_id" in warned
    first = (frame.loc[0, "user_id"], frame.loc[0, "item_id"])
    message = str(raised.value)
    assert f"row {repeat}, field user_id, item_id: repeats" in message
    assert f"pair {first} of row 2" in message
    assert f"{len(frame):,} of {2 * len(frame):,} rows (50.00%)" in message


def test_a_tenfold_snapshot_is_an_anomaly_not_a_crash(history, tmp_path):
    frame = _text(history, 2)
    first = _text(history, 1)
    copies = 10 * len(first) // len(frame) + 1
    bigger = pd.concat(
        [
            frame.assign(user_id=frame["user_id"] + f"c{copy}")
            for copy in range(copies)
        ],
        ignore_index=True,
    )

    with pytest.raises(snapshot_check.SnapshotError) as raised:
        _check(history, tmp_path, bigger)
    facts, _ = _check(history, tmp_path, bigger, max_growth=0)

    assert facts.rows == len(bigger)
    assert "span 2: anomaly: " in str(raised.value)
    assert f"times span 1's {len(first):,}" in str(raised.value)
    assert "at most 10 times" in str(raised.value)


def test_the_previous_span_is_found_under_the_data_root(history):
    found = snapshot_check.previous_span(str(history), "span-{SPAN}/*.csv", 2)
    nothing = snapshot_check.previous_span(str(history), "span-{SPAN}/*.csv", 1)

    assert found == (1, [str(history / "span-1" / "interactions.csv")])
    assert nothing is None


def test_example_gen_carries_the_checks_to_its_executor(tmp_path):
    config = PipelineConfig.local(
        tmp_path, tmp_path, max_snapshot_growth=4.0, max_clock_skew_seconds=9
    )
    example_gen = next(
        node
        for node in create_pipeline(config).components
        if isinstance(node, TemporalExampleGen)
    )

    settings = snapshot_checks(example_gen.exec_properties)

    assert settings["schema_file"] == str(SCHEMA_DIR / "schema.pbtxt")
    assert settings["span_pattern"] == "span-{SPAN}/*.csv"
    assert settings["max_growth"] == 4.0
    assert settings["max_clock_skew_seconds"] == 9
    with pytest.raises(ValueError, match="max_growth"):
        snapshot_check.CheckConfig(max_growth=-1)


# Paths of the config.


def test_a_local_run_names_a_missing_data_root_or_span(tmp_path, history):
    from pipeline.local import run_span

    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(nowhere)):
        run_span(PipelineConfig.local(tmp_path / "w", nowhere, span=1))
    with pytest.raises(FileNotFoundError) as raised:
        run_span(PipelineConfig.local(tmp_path / "w", history, span=7))
    empty = tmp_path / "data" / "span-3"
    empty.mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as no_file:
        PipelineConfig.local(
            tmp_path / "w", tmp_path / "data", span=3
        ).check_local_paths()

    assert f"Span 7: '{history / 'span-7'}' does not exist" in str(raised.value)
    assert f"Span 3: '{empty}' holds no file" in str(no_file.value)
    # Nothing was written for the runs that were refused.
    assert not (tmp_path / "w").exists()


def test_config_paths_must_be_folders_and_settings_in_range(tmp_path):
    (tmp_path / "data" / "span-1").mkdir(parents=True)
    (tmp_path / "data" / "span-1" / "a.csv").write_text("x\n")
    (tmp_path / "serving").write_text("not a folder")
    config = PipelineConfig.local(tmp_path, tmp_path / "data", span=1)

    with pytest.raises(NotADirectoryError, match="serving"):
        config.check_local_paths()
    with pytest.raises(FileNotFoundError, match="schema.pbtxt"):
        PipelineConfig.local(tmp_path, tmp_path, schema_dir=str(tmp_path))
    with pytest.raises(ValueError, match="max_duplicate_fraction"):
        PipelineConfig.local(tmp_path, tmp_path, max_duplicate_fraction=2)
    with pytest.raises(ValueError, match="data_root"):
        PipelineConfig(data_root=" ", pipeline_root="p", serving_root="s")


# The Pusher.


def _fake_model(root: pathlib.Path, name: str) -> standard_artifacts.Model:
    """A Model artifact whose serving folder holds a few files."""
    model = standard_artifacts.Model()
    model.uri = str(root / name)
    serving = root / name / "Format-Serving"
    if serving.exists():
        return model
    (serving / "variables").mkdir(parents=True)
    (serving / "assets.extra").mkdir()
    (serving / "saved_model.pb").write_bytes(b"graph of " + name.encode())
    (serving / "variables" / "variables.index").write_bytes(b"index")
    for part in range(4):
        data = serving / "variables" / f"variables.data-{part:05d}-of-00004"
        data.write_bytes(os.urandom(1000))
    (serving / "assets.extra" / "note.txt").write_text(name)
    return model


def _push(
    root: pathlib.Path,
    model: standard_artifacts.Model,
    span: int = 2,
    fingerprint: str = "files:1,bytes:10",
    blessed: bool = True,
) -> standard_artifacts.PushedModel:
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(root / "blessing")
    blessing.set_int_custom_property("blessed", int(blessed))
    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.set_int_custom_property("span", span)
    examples.set_string_custom_property("input_fingerprint", fingerprint)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(root / f"pushed-{time.monotonic_ns()}")
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(
            base_directory=str(root / "serving")
        )
    )
    atomic_pusher.Executor().Do(
        {
            "model": [model],
            "model_blessing": [blessing],
            "examples": [examples],
        },
        {"pushed_model": [pushed]},
        {"push_destination": json_format.MessageToJson(destination)},
    )
    return pushed


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_push_renames_a_complete_version_into_place(tmp_path):
    model = _fake_model(tmp_path, "m1")

    pushed = _push(tmp_path, model)

    serving = tmp_path / "serving"
    (version,) = atomic_pusher.served_versions(str(serving))
    assert os.listdir(serving) == [os.path.basename(version)]
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_destination") == version
    copied = _files(pathlib.Path(version))
    record = json.loads(copied.pop(atomic_pusher.PUSH_RECORD))
    assert copied == _files(tmp_path / "m1" / "Format-Serving")
    assert record["model_uri"] == model.uri
    assert (record["span"], record["input_fingerprint"]) == (
        2,
        "files:1,bytes:10",
    )


def test_a_push_that_fails_midway_leaves_nothing_half_written(
    tmp_path, monkeypatch
):
    _push(tmp_path, _fake_model(tmp_path, "m1"), span=1)
    serving = tmp_path / "serving"
    before = _files(serving)
    copy = atomic_pusher._copy_file
    copied = []

    def copy_three_then_fail(source, target):
        if len(copied) == 3:
            raise OSError("No space left on device")
        copy(source, target)
        copied.append(target)

    monkeypatch.setattr(atomic_pusher, "_copy_file", copy_three_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _push(tmp_path, _fake_model(tmp_path, "m2"), span=2)

    # Three files were written, elsewhere, and are gone again.
    assert len(copied) == 3
    assert all(atomic_pusher.TEMPORARY_PREFIX in c for c in copied)
    assert _files(serving) == before
    monkeypatch.setattr(atomic_pusher, "_copy_file", copy)
    pushed = _push(tmp_path, _fake_model(tmp_path, "m2"), span=2)
    versions = atomic_pusher.served_versions(str(serving))
    assert len(versions) == 2
    assert (
        pushed.get_string_custom_property("pushed_destination")
        == (versions[-1])
    )
    assert (pathlib.Path(versions[-1]) / "saved_model.pb").read_bytes() == (
        b"graph of m2"
    )


_KILLED_PUSH = """
import json, os, signal, sys
sys.path.insert(0, {project!r})
from tfx.types import standard_artifacts
from components import atomic_pusher

copy = atomic_pusher._copy_file
done = []

def copy_then_die(source, target):
    if len(done) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    copy(source, target)
    done.append(target)

atomic_pusher._copy_file = copy_then_die
model = standard_artifacts.Model()
model.uri = {model!r}
blessing = standard_artifacts.ModelBlessing()
blessing.set_int_custom_property("blessed", 1)
pushed = standard_artifacts.PushedModel()
pushed.uri = {pushed!r}
atomic_pusher.Executor().Do(
    {{"model": [model], "model_blessing": [blessing]}},
    {{"pushed_model": [pushed]}},
    {{"push_destination": {destination!r}}},
)
"""


def test_a_push_killed_midway_is_invisible_and_cleaned_by_the_next(
    tmp_path,
):
    _push(tmp_path, _fake_model(tmp_path, "m1"), span=1)
    serving = tmp_path / "serving"
    (served,) = atomic_pusher.served_versions(str(serving))
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(
            base_directory=str(serving)
        )
    )
    script = textwrap.dedent(
        _KILLED_PUSH.format(
            project=str(PROJECT_ROOT),
            model=_fake_model(tmp_path, "m2").uri,
            pushed=str(tmp_path / "pushed-killed"),
            destination=json_format.MessageToJson(destination),
        )
    )

    killed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=300,
    )

    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    leftovers = [
        name
        for name in os.listdir(serving)
        if name.startswith(atomic_pusher.TEMPORARY_PREFIX)
    ]
    assert len(leftovers) == 1
    partial = serving / leftovers[0]
    assert len(_files(partial)) == 4
    assert not (partial / "saved_model.pb").exists()
    # Readers see the old version only.
    assert atomic_pusher.served_versions(str(serving)) == [served]

    pushed = _push(tmp_path, _fake_model(tmp_path, "m2"), span=2)

    versions = atomic_pusher.served_versions(str(serving))
    assert versions[0] == served and len(versions) == 2
    assert sorted(os.listdir(serving)) == sorted(
        os.path.basename(v) for v in versions
    )
    assert pushed.get_int_custom_property("pushed") == 1


def test_the_same_snapshot_is_not_pushed_twice(tmp_path):
    first = _push(tmp_path, _fake_model(tmp_path, "m1"))

    retrained = _push(tmp_path, _fake_model(tmp_path, "m2"))
    same_model = _push(tmp_path, _fake_model(tmp_path, "m1"))
    new_data = _push(tmp_path, _fake_model(tmp_path, "m3"), fingerprint="x")

    versions = atomic_pusher.served_versions(str(tmp_path / "serving"))
    assert len(versions) == 2
    served = first.get_string_custom_property("pushed_destination")
    assert retrained.get_int_custom_property("pushed") == 0
    assert retrained.get_string_custom_property("already_served") == served
    # A run killed after its push reports the version it wrote.
    assert same_model.get_int_custom_property("pushed") == 1
    assert same_model.get_string_custom_property("pushed_destination") == (
        served
    )
    assert (
        new_data.get_string_custom_property("pushed_destination")
        == (versions[1])
    )


def test_versions_only_grow_and_unblessed_models_are_not_pushed(tmp_path):
    pushes = [
        _push(tmp_path, _fake_model(tmp_path, f"m{i}"), span=i)
        for i in range(3)
    ]
    refused = _push(tmp_path, _fake_model(tmp_path, "m9"), 9, blessed=False)

    versions = [
        int(p.get_string_custom_property("pushed_version")) for p in pushes
    ]
    assert versions == sorted(set(versions))
    assert len(atomic_pusher.served_versions(str(tmp_path / "serving"))) == 3
    assert refused.get_int_custom_property("pushed") == 0


# Damaged base models, on copies of a real exported model.


class _TinyModel(tf.Module):
    """A SavedModel with the signatures a base model needs."""

    def __init__(self):
        super().__init__()
        self.table = tf.Variable(tf.random.normal([64, 8], seed=1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def scores(self, user_id):
        rows = tf.strings.to_hash_bucket_fast(user_id, 64)
        return {"scores": tf.gather(self.table, rows)}


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    """A small model laid out as an export, with its warm-start files."""
    folder = str(tmp_path_factory.mktemp("model") / "Format-Serving")
    tiny = _TinyModel()
    tf.saved_model.save(
        tiny,
        folder,
        signatures={name: tiny.scores for name in REQUIRED_SIGNATURES},
    )
    config = ModelConfig()
    ids = {"user_id": ["u1", "u2", "u3"], "item_id": ["i1", "i2"]}
    weights = {}
    for name, tower in (("user_id", "user_tower"), ("item_id", "item_tower")):
        path = warm_start.vocabulary_path(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.writelines(f"{i}\t{n + 1}\n" for n, i in enumerate(ids[name]))
        rows = len(ids[name]) + config.oov_buckets
        weights[f"{tower}/{name}/embeddings"] = np.ones(
            [rows, config.embedding_dim], np.float32
        )
    state = os.path.join(folder, "assets.extra", "warm_start")
    os.makedirs(state)
    np.savez(os.path.join(state, "weights.npz"), **weights)
    with open(os.path.join(state, "state.json"), "w") as f:
        json.dump({"config": config.to_dict(), "span": 1}, f)
    # The layout is the one models.warm_start reads.
    assert warm_start.read_state(folder).vocabularies == ids
    return folder


def _damaged(source: str, tmp_path, relative: str, how: str) -> str:
    copy = str(tmp_path / "model")
    shutil.copytree(source, copy)
    path = pathlib.Path(copy) / relative
    if relative == "variables/data":
        path = next((pathlib.Path(copy) / "variables").glob("*.data-*"))
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    else:  # One byte flipped in the middle.
        middle = len(data) // 2
        flipped = bytes([data[middle] ^ 0xFF])
        path.write_bytes(data[:middle] + flipped + data[middle + 1 :])
    return copy


_DAMAGE = [
    ("assets.extra/warm_start/weights.npz", "truncate", "warm-start files"),
    ("assets.extra/warm_start/weights.npz", "flip", "warm-start files"),
    ("assets.extra/warm_start/state.json", "truncate", "JSONDecodeError"),
    ("assets.extra/vocabulary/user_id.tsv", "garbage", "user_id.tsv"),
    ("assets.extra/vocabulary/item_id.tsv", "truncate", "item_id"),
    ("saved_model.pb", "truncate", "saved_model.pb cannot be read"),
    ("variables/data", "flip", "Checksum does not match"),
    ("variables/data", "truncate", "variables"),
]


def test_an_intact_model_is_usable(exported_model):
    assert base_model.base_model_problem(exported_model) is None


@pytest.mark.parametrize(
    "relative, how, problem", _DAMAGE, ids=[f"{r}-{h}" for r, h, _ in _DAMAGE]
)
def test_a_damaged_base_model_is_never_used(
    exported_model, tmp_path, relative, how, problem
):
    damaged = _damaged(exported_model, tmp_path, relative, how)
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "artifact")
    os.makedirs(model.uri)
    os.symlink(damaged, os.path.join(model.uri, "Format-Serving"))

    found = base_model.base_model_problem(damaged)
    usable, reason = base_model.usable_base_model([model], "test")

    assert found is not None and problem in found
    assert usable == [] and model.uri in reason and problem in reason


# No pickles, no code from data or config.

_PACKAGES = ("components", "models", "pipeline", "kubeflow", "bench")
_UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}
_UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}


def _sources():
    for package in _PACKAGES:
        yield from sorted((PROJECT_ROOT / package).rglob("*.py"))


def test_nothing_loads_pickles_or_runs_code_from_data():
    found = []
    np_loads = 0
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(PROJECT_ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                if isinstance(node, ast.ImportFrom):
                    names.append(node.module or "")
                unsafe = {n.split(".")[0] for n in names} & _UNSAFE_MODULES
                if unsafe:
                    found.append(f"{where}:{node.lineno} imports {unsafe}")
            if not isinstance(node, ast.Call):
                continue
            function = node.func
            name = getattr(function, "id", getattr(function, "attr", ""))
            owner = getattr(getattr(function, "value", None), "id", "")
            keywords = {k.arg: k.value for k in node.keywords}
            builtin = isinstance(function, ast.Name)
            if (builtin and name in _UNSAFE_BUILTINS) or name == "read_pickle":
                found.append(f"{where}:{node.lineno} calls {name}")
            if name == "load" and owner == "yaml":
                found.append(f"{where}:{node.lineno} calls yaml.load")
            if name == "load" and owner == "np":
                np_loads += 1
                allow = keywords.get("allow_pickle")
                if not (
                    isinstance(allow, ast.Constant) and allow.value is False
                ):
                    found.append(f"{where}:{node.lineno} np.load may unpickle")

    assert found == []
    # The scan sees the one np.load there is (warm-start weights).
    assert np_loads >= 1


def test_kubeflow_runs_the_same_checked_push_and_publication(tmp_path):
    from kubeflow.runner import IMAGE_SCHEMA_DIR, compile_pipeline

    config = PipelineConfig(
        data_root="gs://b/data",
        pipeline_root="gs://b/root",
        serving_root="gs://b/serving",
        schema_dir=IMAGE_SCHEMA_DIR,
    )
    path = compile_pipeline(config, "freshtower:1", str(tmp_path / "p.json"))
    with open(path) as f:
        spec = json.load(f)["pipelineSpec"]

    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    for task, executor in (
        ("Pusher", "components.atomic_pusher.Executor"),
        ("Evaluator", "components.base_model.EvaluatorExecutor"),
        ("TemporalExampleGen", "components.temporal_split.Executor"),
    ):
        assert executor in executors[f"{task}_executor"]["container"]["args"]
    # The index is published after the push, or in place of training.
    assert "Pusher" in tasks["PublishIndex"]["dependentTasks"]
    untrained = tasks["PublishIndexUntrained"]["triggerPolicy"]["condition"]
    assert "metadata['changed_pairs'] < 1.0" in untrained
    checks = json.loads(
        tasks["TemporalExampleGen"]["inputs"]["parameters"]["custom_config"][
            "runtimeValue"
        ]["constant"]
    )["custom_config"]["value"]["snapshot_checks"]
    assert checks["schema_file"] == f"{IMAGE_SCHEMA_DIR}/schema.pbtxt"

"""Bad data, crashes, reruns and damaged models through the real pipeline.

Span 1 of a tiny history is run once; every test starts from a fresh copy
of that workdir, with its span-1 model served, restored at the same path
(ML Metadata records absolute paths), and does something to span 2: bad
files, a kill while the Trainer runs, a push that fails midway, reruns, a
damaged base model. Each checks what ran, what was reused, and what the
serving root holds afterwards.
"""

import hashlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.utils import path_utils

from components import atomic_pusher
from models import warm_start
from pipeline import synthetic
from pipeline.config import PROJECT_ROOT, PipelineConfig
from pipeline.evaluation import ALL, BASELINE
from pipeline.local import _run_outputs, run_span

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

_TINY = synthetic.SyntheticConfig(
    seed=7,
    num_spans=2,
    initial_users=150,
    initial_items=80,
    interactions_per_user=10.0,
)
# What a run of span 2 does before the Trainer, all reusable.
_BEFORE_TRAINING = (
    "ImportSchemaGen",
    "TemporalExampleGen",
    "StatisticsGen",
    "ExampleValidator",
    "AnomalyGate",
    "InteractionDelta",
    "GrowingTransform",
)
_DATA_COMPONENTS = _BEFORE_TRAINING[:5]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    synthetic.write_history(root, _TINY)
    return root


@pytest.fixture(scope="module")
def first_span(history, tmp_path_factory):
    """Span 1 run once; a pristine copy of its workdir to restore."""
    base = tmp_path_factory.mktemp("first")
    work = base / "work"
    report = run_span(PipelineConfig.local(work, history, span=1))
    assert report.pushed_model, "span 1 must be served for these tests"
    shutil.copytree(work, base / "pristine")
    return work, base / "pristine", report


@pytest.fixture
def workdir(first_span):
    """The span-1 workdir as it was after its run, at its own path."""
    work, pristine, _ = first_span
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work)
    return work


def _digest(folder: pathlib.Path) -> dict[str, str]:
    """Every file under a folder with a hash of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _outputs(work: pathlib.Path, component: str, key: str) -> list[str]:
    folder = work / "pipeline" / component / key
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _states(work: pathlib.Path) -> dict[str, int]:
    """The state of each node's execution in the newest pipeline run."""
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(work / "metadata.sqlite")
        )
    )
    runs = store.get_contexts_by_type("pipeline_run")
    newest = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    node_type = store.get_context_type("node").id
    states = {}
    for execution in store.get_executions_by_context(newest.id):
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id == node_type:
                node = context.name.split(".", 1)[1]
                states[node] = execution.last_known_state
    return states


_CACHED = metadata_store_pb2.Execution.CACHED
_COMPLETE = metadata_store_pb2.Execution.COMPLETE


def _answers(version: str, snapshot: pd.DataFrame) -> None:
    """A served version loads and answers a top-K query."""
    model = tf.saved_model.load(version)
    user = snapshot.iloc[0]
    result = model.signatures["serving_default"](
        user_id=tf.constant([str(user["user_id"])]),
        user_age=tf.constant([int(user["user_age"])], tf.int64),
        user_occupation=tf.constant([str(user["user_occupation"])]),
    )
    assert result["item_ids"].shape[0] == 1


def _only_complete_versions(serving: pathlib.Path) -> list[str]:
    versions = atomic_pusher.served_versions(str(serving))
    assert sorted(os.listdir(serving)) == sorted(
        os.path.basename(v) for v in versions
    ), "the serving root holds something that is not a complete version"
    return versions


# Bad input: each stops the run in ExampleGen, before Transform.


def _text(root: pathlib.Path, span: int) -> pd.DataFrame:
    path = root / f"span-{span}" / "interactions.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _set(frame: pd.DataFrame, row: int, column: str, value: str):
    frame = frame.copy()
    frame.loc[row - 2, column] = value  # The header is row 1.
    return frame


def _bigger(frame: pd.DataFrame, first: pd.DataFrame) -> pd.DataFrame:
    copies = 10 * len(first) // len(frame) + 1
    return pd.concat(
        [
            frame.assign(user_id=frame["user_id"] + f"x{c}")
            for c in range(copies)
        ]
    )


def _earlier(frame: pd.DataFrame, first: pd.DataFrame) -> pd.DataFrame:
    newest = first["timestamp"].astype(int).max()
    times = frame["timestamp"].astype(int)
    return frame.assign(timestamp=(times - times.max() + newest - 3600))


_FUTURE = str(int(time.time()) + 30 * 86400)
# name -> (span 2 from span 2 and span 1, row, field, what the line says)
_BAD_SPANS = {
    "empty span": (
        lambda f, first: f.iloc[:0],
        None,
        None,
        "no rows: the files hold a header only",
    ),
    "missing column": (
        lambda f, first: f.drop(columns=["user_age"]),
        1,
        "user_age",
        "column missing",
    ),
    "empty id": (
        lambda f, first: _set(f, 9, "user_id", ""),
        9,
        "user_id",
        "the value is empty",
    ),
    "null id": (
        lambda f, first: _set(f, 11, "item_id", "null"),
        11,
        "item_id",
        "the id is a null: 'null'",
    ),
    "non-numeric rating": (
        lambda f, first: _set(f, 6, "rating", "four stars"),
        6,
        "rating",
        "not a finite number: 'four stars'",
    ),
    "timestamp in the future": (
        lambda f, first: _set(f, 20, "timestamp", _FUTURE),
        20,
        "timestamp",
        "is in the future",
    ),
    "timestamps going back": (
        _earlier,
        None,
        "timestamp",
        "the snapshot goes back in time",
    ),
    "column of another type": (
        lambda f, first: f.assign(item_year=f["item_year"] + ".5"),
        2,
        "item_year",
        "not a whole number: ",
    ),
    "every pair duplicated": (
        lambda f, first: pd.concat([f, f]),
        None,
        "user_id, item_id",
        "rows (50.00%) repeat a pair",
    ),
    "snapshot 10x larger": (
        _bigger,
        None,
        None,
        "anomaly: ",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_SPANS))
def test_a_bad_span_stops_before_transform_and_serving_is_untouched(
    case, history, workdir, tmp_path
):
    make, row, field, problem = _BAD_SPANS[case]
    data = tmp_path / "data"
    (data / "span-1").mkdir(parents=True)
    shutil.copy(history / "span-1" / "interactions.csv", data / "span-1")
    (data / "span-2").mkdir()
    bad_file = data / "span-2" / "interactions.csv"
    make(_text(history, 2), _text(history, 1)).to_csv(bad_file, index=False)
    serving = workdir / "serving"
    served = _digest(serving)
    transforms = _outputs(workdir, "GrowingTransform", "transform_graph")
    deltas = _outputs(workdir, "InteractionDelta", "delta")

    with pytest.raises(Exception) as raised:
        run_span(PipelineConfig.local(workdir, data, span=2))

    message = str(raised.value)
    where = "span 2"
    if field is not None or row is not None:
        where += f", file {re.escape(str(bad_file))}, row "
        where += str(row) if row is not None else "[0-9]+"
    if field is not None:
        where += f", field {re.escape(field)}"
    assert re.search(where + ": ", message), message
    assert problem in message, message
    assert "the run stops before Transform" in message
    # Nothing after ExampleGen ran: no new transform, model or push.
    assert _outputs(workdir, "GrowingTransform", "transform_graph") == (
        transforms
    )
    assert len(_outputs(workdir, "WarmStartTrainer", "model")) == 1
    assert len(_outputs(workdir, "Pusher", "pushed_model")) == 1
    assert _outputs(workdir, "InteractionDelta", "delta") == deltas
    assert _digest(serving) == served


def test_a_missing_span_folder_is_named_before_anything_runs(history, workdir):
    served = _digest(workdir / "serving")
    runs_before = _states(workdir)

    with pytest.raises(FileNotFoundError) as raised:
        run_span(PipelineConfig.local(workdir, history, span=9))

    assert f"Span 9: '{history / 'span-9'}' does not exist" in str(raised.value)
    assert _states(workdir) == runs_before
    assert _digest(workdir / "serving") == served


# Crashes.


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        start_new_session=True,
        **kwargs,
    )


def _kill_when_logged(
    process: subprocess.Popen, log: pathlib.Path, line: str
) -> None:
    """SIGKILLs the process (and its children) once its log has `line`."""
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if log.exists() and line in log.read_text(errors="replace"):
                time.sleep(0.5)  # Inside the component, far from its end.
                return
            if process.poll() is not None:
                output = process.stdout.read()
                pytest.fail(f"the run ended before {line!r}:\n{output}")
            time.sleep(0.2)
        pytest.fail(f"{line!r} never came")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def test_a_run_killed_while_training_resumes_from_the_cache(history, workdir):
    serving = workdir / "serving"
    served = _digest(serving)
    log = workdir / "logs" / "span-2.log"
    args = ("run", "--data", str(history), "--workdir", str(workdir))

    killed = _cli(*args, "--span", "2")
    _kill_when_logged(killed, log, "Component WarmStartTrainer is running")

    assert killed.returncode == -signal.SIGKILL
    assert _digest(serving) == served
    states = _states(workdir)
    assert states.get("WarmStartTrainer") != _COMPLETE
    assert "Pusher" not in states
    log.rename(log.with_name("killed.log"))

    rerun = _cli(*args, "--span", "2")
    output, _ = rerun.communicate(timeout=900)

    assert rerun.returncode == 0, output
    states = _states(workdir)
    for node in _BEFORE_TRAINING:
        assert states[node] == _CACHED, (node, states)
    assert states["WarmStartTrainer"] == _COMPLETE
    assert states["PublishIndex"] == _COMPLETE
    assert log.read_text().count("A cached execution") == len(_BEFORE_TRAINING)
    for line in output.splitlines():
        if line.split()[:1] == ["WarmStartTrainer"]:
            assert line.split()[1] == "done"
    versions = _only_complete_versions(serving)
    assert len(versions) == 2
    snapshot = _text(history, 2)
    for version in versions:
        _answers(version, snapshot)
    # The span-1 version is byte for byte what it was.
    first = os.path.basename(versions[0])
    assert {
        k: v for k, v in _digest(serving).items() if k.startswith(first)
    } == served


def test_a_push_that_fails_midway_leaves_the_old_model_and_reruns(
    history, workdir, monkeypatch
):
    serving = workdir / "serving"
    served = _digest(serving)
    copy = atomic_pusher._copy_file
    written = []

    def copy_some_then_fail(source, target):
        if len(written) == 5:
            raise OSError("No space left on device")
        copy(source, target)
        written.append(target)

    monkeypatch.setattr(atomic_pusher, "_copy_file", copy_some_then_fail)
    config = PipelineConfig.local(workdir, history, span=2)

    with pytest.raises(Exception, match="No space left on device"):
        run_span(config)

    assert len(written) == 5
    assert all(atomic_pusher.TEMPORARY_PREFIX in path for path in written)
    assert _digest(serving) == served
    _only_complete_versions(serving)

    monkeypatch.setattr(atomic_pusher, "_copy_file", copy)
    report = run_span(config)

    states = _states(workdir)
    for node in _DATA_COMPONENTS:
        assert states[node] == _CACHED, (node, states)
    assert states["Pusher"] == _COMPLETE
    versions = _only_complete_versions(serving)
    assert len(versions) == 2 and report.pushed_model == versions[-1]
    _answers(report.pushed_model, _text(history, 2))


# Reruns.


def _vocabularies(serving_dir: str) -> dict[str, bytes]:
    files = {}
    for name in ("user_id", "item_id"):
        with open(warm_start.vocabulary_path(serving_dir, name), "rb") as f:
            files[name] = f.read()
    return files


def _trained_model(config: PipelineConfig) -> tuple[str, str]:
    """The newest run's model, and the version it says is already served."""
    outputs = _run_outputs(config)
    model = path_utils.serving_model_path(outputs["model"].uri)
    served = outputs["pushed_model"].custom_properties["already_served"]
    return model, served.string_value


def test_a_span_run_three_times_pushes_one_version_and_one_vocabulary(
    history, workdir
):
    serving = workdir / "serving"
    config = PipelineConfig.local(workdir, history, span=2)

    first = run_span(config)
    first_model, _ = _trained_model(config)
    again = run_span(config)
    again_model, again_served = _trained_model(config)
    no_cache = PipelineConfig.local(
        workdir, history, span=2, enable_cache=False
    )
    uncached = run_span(no_cache)
    uncached_model, uncached_served = _trained_model(no_cache)

    assert first.pushed_model is not None
    versions = _only_complete_versions(serving)
    assert len(versions) == 2 and versions[-1] == first.pushed_model
    for report, served in ((again, again_served), (uncached, uncached_served)):
        assert report.pushed_model is None
        # A blessed rerun names the version that already serves its span.
        assert served == (first.pushed_model if report.blessed else "")
    # The reruns trained again, and every id kept its index and count.
    assert len({first_model, again_model, uncached_model}) == 3
    served = _vocabularies(first.pushed_model)
    assert _vocabularies(first_model) == served
    assert _vocabularies(again_model) == served
    assert _vocabularies(uncached_model) == served
    assert (first.user_vocabulary, first.item_vocabulary) == (
        uncached.user_vocabulary,
        uncached.item_vocabulary,
    )


# Damaged base models.


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garble(path: pathlib.Path) -> None:
    path.write_bytes(os.urandom(max(64, path.stat().st_size)))


_DAMAGES = {
    "warm-start files": (
        ("assets.extra/warm_start/weights.npz", _truncate),
        ("assets.extra/vocabulary/user_id.tsv", _garble),
    ),
    "SavedModel": (("saved_model.pb", _truncate),),
}


@pytest.mark.parametrize("damage", list(_DAMAGES))
def test_a_damaged_base_model_means_a_cold_start_never_garbage(
    damage, history, workdir, caplog
):
    (model,) = _outputs(workdir, "WarmStartTrainer", "model")
    base = (
        workdir / "pipeline" / "WarmStartTrainer" / "model" / model
    ) / "Format-Serving"
    for relative, spoil in _DAMAGES[damage]:
        spoil(base / relative)
    serving = workdir / "serving"
    served = _digest(serving)

    report = run_span(PipelineConfig.local(workdir, history, span=2))

    training = report.training
    assert training["mode"] == "cold", training
    assert "is unusable" in training["reason"]
    names = [relative.split("/")[-1] for relative, _ in _DAMAGES[damage]]
    assert any(name in training["reason"] for name in names), training
    assert training["carried"] == {}
    # The vocabularies started empty: they hold the ids of span 2's
    # training rows only, in their own order.
    assert "The id vocabularies start empty" in caplog.text
    assert "Training starts cold: the base model" in caplog.text
    baseline = report.evaluation.recall[ALL].get(BASELINE) or {}
    if damage == "SavedModel":
        assert "no baseline" in caplog.text
        assert not baseline
    else:
        assert baseline, "an intact SavedModel stays the baseline"
    # What was served is untouched, and whatever was pushed is complete.
    versions = _only_complete_versions(serving)
    first = os.path.basename(versions[0])
    assert {
        k: v for k, v in _digest(serving).items() if k.startswith(first)
    } == served
    for version in versions:
        _answers(version, _text(history, 2))

"""The command line, run as users run it: `python -m pipeline` (slow)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from pipeline import snapshots
from tests.report_screenshot import chromium, colour_share, screenshot

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=600,
    )


def test_run_prints_a_line_per_component_and_the_span_table(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    assert _cli("generate", "--out", str(data), "--spans", "1").returncode == 0

    done = _cli("run", "--data", str(data), "--workdir", str(work))

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Span (latest): running the pipeline")
    for component in ("InteractionDelta", "WarmStartTrainer", "Pusher"):
        assert any(line.split()[:2] == [component, "done"] for line in lines)
    table = {line.split("  ")[1].strip() for line in lines if line[:2] == "  "}
    assert {"rows in snapshot", "delta", "training", "evaluation"} <= table
    assert "blessed: yes, every threshold holds" in done.stdout
    served = os.listdir(work / "serving")
    assert len(served) == 1 and served[0] in done.stdout
    # The TFX log goes to the file the first line names, not to the console.
    log = lines[0].split("(log: ")[1].rstrip(")")
    assert os.path.dirname(log) == str(work / "logs")
    text = pathlib.Path(log).read_text()
    assert "Component WarmStartTrainer is finished" in text
    assert "INFO" not in done.stdout


def test_a_failed_run_says_so_and_where_the_log_is(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    assert _cli("generate", "--out", str(data), "--spans", "1").returncode == 0
    path = snapshots.span_dir(data, 1) / "interactions.csv"
    frame = snapshots.read_span(data, 1)
    frame["rating"] = frame["rating"].astype(str)
    frame.loc[frame.index[::5], "rating"] = "five"
    frame.to_csv(path, index=False)

    done = _cli("run", "--data", str(data), "--workdir", str(work), "--span=1")

    assert done.returncode == 1
    assert "Span 1: the run failed" in done.stderr
    assert "rating" in done.stderr
    assert f"Full log: {work / 'logs' / 'span-1.log'}" in done.stderr
    assert not (work / "serving").exists()


def test_backtest_puts_policies_run_apart_side_by_side(tmp_path):
    out = tmp_path / "backtest"
    common = ("backtest", "--format", "synthetic", "--spans", "2")

    popular = _cli(*common, "--policy", "popularity", "--out", str(out))
    warm = _cli(*common, "--policy", "warm", "--out", str(out))

    assert popular.returncode == 0, popular.stderr
    assert warm.returncode == 0, warm.stderr
    assert "[popularity] span 1 -> 2: R@100 " in popular.stdout
    lines = warm.stdout.splitlines()
    assert "[warm] span 2: running the pipeline" in lines
    assert any(
        line.split()[:2] == ["WarmStartTrainer", "done"] for line in lines
    )
    records = json.loads((out / "backtest.json").read_text())["records"]
    by_key = {(r["policy"], r["span"]): r for r in records}
    assert sorted(by_key) == [
        ("popularity", 1),
        ("popularity", 2),
        ("warm", 1),
        ("warm", 2),
    ]
    cold, warmed = by_key["warm", 1], by_key["warm", 2]
    assert (cold["mode"], warmed["mode"]) == ("cold", "warm")
    # Every id of span 1 keeps its row; span 2's new ids are appended.
    assert warmed["ids_carried"] == {
        "user_id": cold["user_vocabulary"],
        "item_id": cold["item_vocabulary"],
    }
    assert warmed["item_vocabulary"] == (
        cold["item_vocabulary"] + warmed["ids_new"]["item_id"]
    )
    assert warmed["examples"] > 0 and warmed["train_seconds"] > 0
    assert cold["pushed"] and cold["model"]
    assert set(cold["component_seconds"]) >= {"GrowingTransform", "Pusher"}
    for record in records:
        recall = record["metrics"]["all"]["recall"]
        assert 0 < recall["10"] <= recall["50"] <= recall["100"] <= 1
    # The summary table printed last has both policies.
    assert [line.split()[0] for line in lines[-2:]] == ["warm", "popularity"]
    page = (out / "report.html").read_text()
    assert page.count("<tr><td>warm</td>") == 3  # two spans and the mean
    assert page.count("<tr><td>popularity</td>") == 3
    if chromium():
        shot = screenshot(out / "report.html", tmp_path / "report.png")
        assert colour_share(shot, "#d95f02") > 0.005  # the warm lines


def test_backtest_refuses_a_movielens_format_without_ratings(tmp_path):
    done = _cli(
        "backtest",
        "--format",
        "movielens-100k",
        "--policy",
        "warm",
        "--out",
        str(tmp_path),
    )

    assert done.returncode == 2
    assert "--format movielens-100k needs --ratings" in done.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("warm_epochs=0", "warm_epochs must be >= 1, got 0"),
        ("warm_epochs=two", "'two' is not a whole number"),
        ("no_such_field=1", "NAME one of embedding_dim"),
        ("logq_correction=maybe", "'maybe' is not true or false"),
    ],
)
def test_a_bad_model_option_is_refused_before_anything_runs(
    tmp_path, option, message
):
    done = _cli(
        "backtest",
        "--format",
        "synthetic",
        "--policy",
        "warm",
        "--model-option",
        option,
        "--out",
        str(tmp_path / "out"),
    )

    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "out").exists()

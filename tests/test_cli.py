"""The command line, run as users run it: `python -m pipeline` (slow)."""

import os
import pathlib
import subprocess
import sys

import pytest

from pipeline import snapshots

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

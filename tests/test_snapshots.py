"""Tests for pipeline.snapshots: the span layout on disk."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from pipeline import snapshots
from pipeline.snapshots import COLUMNS, DTYPES


def _frame() -> pd.DataFrame:
    """A small valid snapshot, deliberately not in the written order."""
    return pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u10", "u1"],
            "item_id": ["i1", "i1", "i3", "i2"],
            "rating": [4.0, 3.5, 5.0, 1.0],
            "timestamp": [200, 100, 100, 100],
            "item_genres": ["Drama", "Drama", "unknown", "Action|Comedy"],
            "item_year": [1995, 1995, 0, 2001],
            "user_age": [30, 0, 41, 0],
            "user_occupation": ["writer", "unknown", "NA", "unknown"],
        }
    )


def test_keys_prefix_raw_ids() -> None:
    assert snapshots.user_key(42) == "u42"
    assert snapshots.user_key("42") == "u42"
    assert snapshots.item_key(7) == "i7"
    assert snapshots.item_key(np.int64(7)) == "i7"


@pytest.mark.parametrize("key", [snapshots.user_key, snapshots.item_key])
@pytest.mark.parametrize("raw", ["", "  "])
def test_keys_reject_empty_ids(key, raw) -> None:
    with pytest.raises(ValueError, match="empty"):
        key(raw)


def test_span_dir(tmp_path) -> None:
    assert snapshots.span_dir(tmp_path, 3) == tmp_path / "span-3"
    assert snapshots.span_dir(str(tmp_path), 0) == tmp_path / "span-0"


@pytest.mark.parametrize("span", [-1, 1.5, True, "2", None])
def test_span_dir_rejects_bad_spans(tmp_path, span) -> None:
    with pytest.raises(ValueError, match="span"):
        snapshots.span_dir(tmp_path, span)


def test_write_read_round_trip(tmp_path) -> None:
    frame = _frame()
    path = snapshots.write_span(tmp_path, 2, frame)
    assert path == tmp_path / "span-2" / "interactions.csv"
    back = snapshots.read_span(tmp_path, 2)
    assert list(back.columns) == list(COLUMNS)
    assert {name: str(back[name].dtype) for name in COLUMNS} == DTYPES
    expected = snapshots.sort_snapshot(snapshots.validate_snapshot(frame))
    pd.testing.assert_frame_equal(back, expected)
    # Strings that pandas would read as missing by default stay strings.
    assert "NA" in set(back["user_occupation"])


def test_written_text_layout(tmp_path) -> None:
    path = snapshots.write_span(tmp_path, 1, _frame())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS)
    rows = [line.split(",") for line in lines[1:]]
    # Sorted by timestamp, then user_id and item_id as strings.
    keys = [(int(row[3]), row[0], row[1]) for row in rows]
    assert keys == [
        (100, "u1", "i1"),
        (100, "u1", "i2"),
        (100, "u10", "i3"),
        (200, "u2", "i1"),
    ]
    # Ratings always carry exactly one decimal, so they read as floats.
    assert [row[2] for row in rows] == ["3.5", "1.0", "5.0", "4.0"]


def test_write_rounds_ratings_to_one_decimal(tmp_path) -> None:
    frame = _frame().assign(rating=[4.04, 3.5, 4.96, 1.0])
    snapshots.write_span(tmp_path, 1, frame)
    back = snapshots.read_span(tmp_path, 1)
    assert back["rating"].tolist() == [3.5, 1.0, 5.0, 4.0]


def test_write_replaces_and_leaves_no_temporary_files(tmp_path) -> None:
    snapshots.write_span(tmp_path, 1, _frame())
    smaller = _frame().iloc[:2]
    snapshots.write_span(tmp_path, 1, smaller)
    assert os.listdir(tmp_path / "span-1") == ["interactions.csv"]
    assert len(snapshots.read_span(tmp_path, 1)) == 2


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    snapshots.write_span(tmp_path, 1, _frame())
    before = (tmp_path / "span-1" / "interactions.csv").read_bytes()

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(snapshots.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        snapshots.write_span(tmp_path, 1, _frame().iloc[:1])
    assert os.listdir(tmp_path / "span-1") == ["interactions.csv"]
    after = (tmp_path / "span-1" / "interactions.csv").read_bytes()
    assert after == before


@pytest.mark.parametrize("column", COLUMNS)
def test_missing_column_is_named(tmp_path, column) -> None:
    with pytest.raises(ValueError, match=column):
        snapshots.write_span(tmp_path, 1, _frame().drop(columns=[column]))
    assert not (tmp_path / "span-1").exists()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("user_id", None),
        ("user_id", ""),
        ("user_id", "  "),
        ("user_id", "42"),
        ("user_id", 42),
        ("item_id", None),
        ("item_id", ""),
        ("item_id", "1e5"),
        ("item_id", "inf"),
        ("item_id", "a\nb"),
        ("rating", None),
        ("rating", 7.0),
        ("rating", 0.0),
        ("rating", "4.0"),
        ("timestamp", None),
        ("timestamp", 1.5),
        ("timestamp", -1),
        ("item_genres", ""),
        ("item_genres", None),
        ("item_year", 2500),
        ("item_year", -3),
        ("user_age", 151),
        ("user_age", np.nan),
        ("user_occupation", ""),
        ("user_occupation", None),
    ],
)
def test_bad_value_is_named(tmp_path, column, value) -> None:
    frame = _frame()
    frame[column] = frame[column].astype(object)
    frame.loc[1, column] = value
    numeric = column in ("rating", "timestamp", "item_year", "user_age")
    if numeric and value is not None and not isinstance(value, str):
        frame[column] = frame[column].astype(float)
    with pytest.raises(ValueError, match=f"'{column}'"):
        snapshots.write_span(tmp_path, 1, frame)
    assert not (tmp_path / "span-1").exists()


def test_duplicate_pair_is_rejected(tmp_path) -> None:
    frame = _frame()
    frame.loc[0, ["user_id", "item_id"]] = ["u1", "i2"]
    with pytest.raises(ValueError, match="user_id.*item_id.*'u1', 'i2'"):
        snapshots.write_span(tmp_path, 1, frame)


def test_validate_drops_extra_columns_and_casts() -> None:
    frame = _frame().assign(extra=1)
    frame["user_age"] = frame["user_age"].astype(float)
    checked = snapshots.validate_snapshot(frame)
    assert list(checked.columns) == list(COLUMNS)
    assert checked["user_age"].dtype == np.int64
    assert checked["user_age"].tolist() == [30, 0, 41, 0]


def test_list_spans(tmp_path) -> None:
    root = tmp_path / "spans"
    assert snapshots.list_spans(root) == []
    for span in (10, 2, 1):
        snapshots.write_span(root, span, _frame())
    (root / "span-4").mkdir()  # no snapshot file
    (root / "span-x").mkdir()
    (root / "span-03").mkdir()
    (root / "span-03" / "interactions.csv").write_text("x")
    (root / "span-5").write_text("a file, not a directory")
    assert snapshots.list_spans(root) == [1, 2, 10]


def test_read_missing_span(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="span-7"):
        snapshots.read_span(tmp_path, 7)


def test_read_rejects_a_wrong_header(tmp_path) -> None:
    directory = tmp_path / "span-1"
    directory.mkdir()
    (directory / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    with pytest.raises(ValueError, match="header"):
        snapshots.read_span(tmp_path, 1)

"""Tests for pipeline.movielens, on tiny fake files written by the tests.

MovieLens data may not be redistributed, so these files imitate the two
layouts with made-up rows.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import movielens, snapshots
from pipeline.snapshots import COLUMNS, DTYPES

GENRES = movielens.ML100K_GENRES

# user, item, rating, timestamp. (1, 10) is rated twice; item 40 is not in
# u.item and user 4 is not in u.user.
U_DATA = [
    (1, 10, 4, 881250949),
    (2, 10, 3, 881250000),
    (1, 20, 5, 881260000),
    (3, 30, 1, 881270000),
    (2, 20, 2, 881280000),
    (1, 10, 2, 881290000),
    (3, 40, 4, 881300000),
    (4, 10, 5, 881310000),
]


def _flags(*names: str, genres: tuple[str, ...] = GENRES) -> str:
    return "|".join("1" if g in names else "0" for g in genres)


def _write_100k(
    directory: pathlib.Path,
    genre_file: str | None = None,
    genres: tuple[str, ...] = GENRES,
) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in U_DATA)
    (directory / "u.data").write_text(data, encoding="ascii")
    first = genres[1]
    second = genres[5] if len(genres) > 5 else genres[-1]
    items = [
        f"10|Café Society (1995)|01-Jan-1995||http://x/10|"
        f"{_flags(first, second, genres=genres)}",
        f"20|Twelve Monkeys (1995)|||http://x/20|"
        f"{_flags('unknown', genres=genres)}",
        f"30|Old One (1939)|12-Mar-1939||http://x/30|"
        f"{_flags(*genres[-3:], genres=genres)}",
    ]
    (directory / "u.item").write_bytes(
        ("\n".join(items) + "\n").encode("latin-1")
    )
    users = "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|none|32067\n"
    (directory / "u.user").write_text(users, encoding="ascii")
    if genre_file is not None:
        (directory / "u.genre").write_text(genre_file, encoding="latin-1")
    return directory


RATINGS_CSV = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,3,4.5,964981247
2,2,3.5,964982224
2,1,0.5,964983815
3,4,5.0,964982931
3,5,2.0,964982400
4,6,3.0,964982500
"""

MOVIES_CSV = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"Shawshank Redemption, The (1994)",Crime|Drama
3,No Year Here,(no genres listed)
4,Babylon 5 (1994-1998),Sci-Fi
5,Trailing Space (2010) ,Drama
"""


def _write_csv(directory: pathlib.Path) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.csv").write_text(RATINGS_CSV, encoding="utf-8")
    (directory / "movies.csv").write_text(MOVIES_CSV, encoding="utf-8")
    return directory


def _check_shape(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMNS)
    assert {name: str(frame[name].dtype) for name in COLUMNS} == DTYPES
    pd.testing.assert_frame_equal(frame, snapshots.sort_snapshot(frame))


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(row) for row in frame.itertuples(index=False)]


@pytest.mark.parametrize("as_file", [False, True])
def test_load_100k(tmp_path, as_file) -> None:
    directory = _write_100k(tmp_path / "ml-100k")
    path = directory / "u.data" if as_file else directory
    frame = movielens.load_movielens(path, "movielens-100k")
    _check_shape(frame)
    assert _rows(frame) == [
        ("u2", "i10", 3.0, 881250000, "Action|Comedy", 1995, 53, "other"),
        ("u1", "i10", 4.0, 881250949, "Action|Comedy", 1995, 24, "technician"),
        ("u1", "i20", 5.0, 881260000, "unknown", 0, 24, "technician"),
        ("u3", "i30", 1.0, 881270000, "Thriller|War|Western", 1939, 23, "none"),
        ("u2", "i20", 2.0, 881280000, "unknown", 0, 53, "other"),
        ("u1", "i10", 2.0, 881290000, "Action|Comedy", 1995, 24, "technician"),
        ("u3", "i40", 4.0, 881300000, "unknown", 0, 23, "none"),
        ("u4", "i10", 5.0, 881310000, "Action|Comedy", 1995, 0, "unknown"),
    ]


def test_load_100k_skips_a_commented_header_line(tmp_path) -> None:
    directory = _write_100k(tmp_path / "ml-100k")
    data = directory / "u.data"
    header = "#user id | item id | rating(1-5) | timestamp.\n"
    expected = movielens.load_movielens(directory, "movielens-100k")
    data.write_text(header + data.read_text())

    frame = movielens.load_movielens(directory, "movielens-100k")

    pd.testing.assert_frame_equal(frame, expected)


def test_load_100k_reads_genre_names_from_u_genre(tmp_path) -> None:
    genres = ("unknown", "Thrills", "Kids", "Art House")
    genre_file = "".join(f"{name}|{k}\n" for k, name in enumerate(genres))
    directory = _write_100k(
        tmp_path, genre_file=genre_file + "\n", genres=genres
    )
    frame = movielens.load_movielens(directory, "movielens-100k")
    by_item = frame.drop_duplicates("item_id").set_index("item_id")
    assert by_item.loc["i10", "item_genres"] == "Thrills|Art House"
    assert by_item.loc["i20", "item_genres"] == "unknown"
    assert by_item.loc["i30", "item_genres"] == "Thrills|Kids|Art House"


def test_load_100k_u_genre_in_any_line_order(tmp_path) -> None:
    genres = ("unknown", "A", "B")
    genre_file = "B|2\nunknown|0\nA|1\n"
    directory = _write_100k(tmp_path, genre_file=genre_file, genres=genres)
    frame = movielens.load_movielens(directory, "movielens-100k")
    by_item = frame.drop_duplicates("item_id").set_index("item_id")
    assert by_item.loc["i10", "item_genres"] == "A|B"


@pytest.mark.parametrize(
    ("flagged", "expected"),
    [
        ((), "unknown"),
        (("unknown",), "unknown"),
        (("unknown", "Drama"), "Drama"),
        (("Western", "Action"), "Action|Western"),
    ],
)
def test_load_100k_genre_flags(tmp_path, flagged, expected) -> None:
    directory = _write_100k(tmp_path)
    line = f"10|Title (1990)|01-Jan-1990||url|{_flags(*flagged)}\n"
    (directory / "u.item").write_text(line, encoding="latin-1")
    frame = movielens.load_movielens(directory, "movielens-100k")
    genres = frame.loc[frame["item_id"] == "i10", "item_genres"]
    assert set(genres) == {expected}
    # Items missing from u.item are unknown too.
    assert set(frame.loc[frame["item_id"] == "i20", "item_genres"]) == {
        "unknown"
    }


def test_load_100k_rejects_a_bad_u_genre(tmp_path) -> None:
    directory = _write_100k(tmp_path, genre_file="Action|one\n")
    with pytest.raises(ValueError, match="u.genre"):
        movielens.load_movielens(directory, "movielens-100k")


@pytest.mark.parametrize("as_file", [False, True])
def test_load_csv(tmp_path, as_file) -> None:
    directory = _write_csv(tmp_path / "ml-latest-small")
    path = directory / "ratings.csv" if as_file else directory
    frame = movielens.load_movielens(path, "movielens-csv")
    _check_shape(frame)
    toy = "Adventure|Animation|Children|Comedy|Fantasy"
    assert _rows(frame) == [
        ("u1", "i3", 4.5, 964981247, "unknown", 0, 0, "unknown"),
        ("u2", "i2", 3.5, 964982224, "Crime|Drama", 1994, 0, "unknown"),
        ("u3", "i5", 2.0, 964982400, "Drama", 2010, 0, "unknown"),
        ("u4", "i6", 3.0, 964982500, "unknown", 0, 0, "unknown"),
        ("u1", "i1", 4.0, 964982703, toy, 1995, 0, "unknown"),
        ("u3", "i4", 5.0, 964982931, "Sci-Fi", 1994, 0, "unknown"),
        ("u2", "i1", 0.5, 964983815, toy, 1995, 0, "unknown"),
    ]


def test_loaded_frames_can_be_written(tmp_path) -> None:
    for fmt, directory in (
        ("movielens-100k", _write_100k(tmp_path / "a")),
        ("movielens-csv", _write_csv(tmp_path / "b")),
    ):
        frame = movielens.load_movielens(directory, fmt)
        latest = frame.drop_duplicates(["user_id", "item_id"], keep="last")
        snapshots.write_span(tmp_path / fmt, 1, latest)
        back = snapshots.read_span(tmp_path / fmt, 1)
        pd.testing.assert_frame_equal(back, latest.reset_index(drop=True))


@pytest.mark.parametrize(
    ("fmt", "writer", "missing"),
    [
        ("movielens-100k", _write_100k, "u.data"),
        ("movielens-100k", _write_100k, "u.item"),
        ("movielens-100k", _write_100k, "u.user"),
        ("movielens-csv", _write_csv, "ratings.csv"),
        ("movielens-csv", _write_csv, "movies.csv"),
    ],
)
def test_missing_file_is_named(tmp_path, fmt, writer, missing) -> None:
    directory = writer(tmp_path)
    (directory / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        movielens.load_movielens(directory, fmt)


def test_missing_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        movielens.load_movielens(tmp_path / "nowhere", "movielens-csv")


def test_u_genre_is_optional(tmp_path) -> None:
    directory = _write_100k(tmp_path)
    assert not (directory / "u.genre").exists()
    frame = movielens.load_movielens(directory, "movielens-100k")
    assert len(frame) == len(U_DATA)


@pytest.mark.parametrize("column", ["userId", "movieId", "rating", "timestamp"])
def test_ratings_csv_missing_column_is_named(tmp_path, column) -> None:
    directory = _write_csv(tmp_path)
    table = pd.read_csv(directory / "ratings.csv").drop(columns=[column])
    table.to_csv(directory / "ratings.csv", index=False)
    with pytest.raises(ValueError, match=rf"ratings\.csv.*'{column}'"):
        movielens.load_movielens(directory, "movielens-csv")


@pytest.mark.parametrize("column", ["movieId", "title", "genres"])
def test_movies_csv_missing_column_is_named(tmp_path, column) -> None:
    directory = _write_csv(tmp_path)
    table = pd.read_csv(directory / "movies.csv").drop(columns=[column])
    table.to_csv(directory / "movies.csv", index=False)
    with pytest.raises(ValueError, match=rf"movies\.csv.*'{column}'"):
        movielens.load_movielens(directory, "movielens-csv")


def test_u_data_missing_column_is_named(tmp_path) -> None:
    directory = _write_100k(tmp_path)
    rows = "".join(f"{u}\t{i}\t{r}\n" for u, i, r, _ in U_DATA)
    (directory / "u.data").write_text(rows)
    with pytest.raises(ValueError, match=r"u\.data.*'timestamp'"):
        movielens.load_movielens(directory, "movielens-100k")


def test_u_item_without_genre_flags_is_rejected(tmp_path) -> None:
    directory = _write_100k(tmp_path)
    (directory / "u.item").write_text("10|Title|01-Jan-1995||url|0|1\n")
    with pytest.raises(ValueError, match=r"u\.item.*Western"):
        movielens.load_movielens(directory, "movielens-100k")


def test_u_user_missing_column_is_named(tmp_path) -> None:
    directory = _write_100k(tmp_path)
    (directory / "u.user").write_text("1|24|M\n")
    with pytest.raises(ValueError, match=r"u\.user.*'occupation'"):
        movielens.load_movielens(directory, "movielens-100k")


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("1\t10\tfive\t881250949\n", "rating"),
        ("1\t10\t4\tlater\n", "timestamp"),
        ("1\t10\t4\t8812509.5\n", "timestamp"),
        ("\t10\t4\t881250949\n", "user id"),
    ],
)
def test_bad_u_data_value_is_named(tmp_path, line, column) -> None:
    directory = _write_100k(tmp_path)
    with open(directory / "u.data", "a", encoding="ascii") as out:
        out.write(line)
    with pytest.raises(ValueError, match=rf"u\.data.*'{column}'"):
        movielens.load_movielens(directory, "movielens-100k")


def test_empty_ratings_file(tmp_path) -> None:
    directory = _write_100k(tmp_path)
    (directory / "u.data").write_text("")
    with pytest.raises(ValueError, match=r"u\.data.*empty"):
        movielens.load_movielens(directory, "movielens-100k")


def test_unknown_format(tmp_path) -> None:
    with pytest.raises(ValueError, match="movielens-1m.*movielens-100k"):
        movielens.load_movielens(_write_csv(tmp_path), "movielens-1m")


# -- cut_spans ------------------------------------------------------------


def _log(timestamps: list[int], pairs: list[tuple[int, int]] | None = None):
    """A ratings log with the given timestamps, in the given row order."""
    if pairs is None:
        pairs = [(k, k) for k in range(len(timestamps))]
    count = len(timestamps)
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u, _ in pairs],
            "item_id": [f"i{i}" for _, i in pairs],
            "rating": np.linspace(1, 5, count).round(1),
            "timestamp": timestamps,
            "item_genres": ["Drama"] * count,
            "item_year": [1999] * count,
            "user_age": [30] * count,
            "user_occupation": ["writer"] * count,
        }
    )


@pytest.mark.parametrize(
    ("rows", "initial_fraction", "num_spans", "sizes"),
    [
        (10, 0.4, 3, [4, 6, 8, 10]),
        (11, 0.3, 3, [3, 5, 8, 11]),
        (10, 0.5, 1, [5, 10]),
        (5, 0.2, 4, [1, 2, 3, 4, 5]),
        (100, 0.7, 2, [70, 85, 100]),
        (100, 0.29, 2, [29, 64, 100]),
    ],
)
def test_cut_spans_boundaries(rows, initial_fraction, num_spans, sizes) -> None:
    rng = np.random.default_rng(rows)
    timestamps = rng.permutation(rows) * 10 + 1000
    log = _log(timestamps.tolist())
    frames = movielens.cut_spans(log, initial_fraction, num_spans)
    assert [len(frame) for frame in frames] == sizes
    ordered = log.sort_values("timestamp", ignore_index=True)
    for frame, size in zip(frames, sizes, strict=True):
        # Distinct pairs: snapshot k is exactly the first rows in time.
        pd.testing.assert_frame_equal(frame, ordered.iloc[:size])


def test_cut_spans_is_cumulative_and_keeps_the_newest_rating() -> None:
    pairs = [(1, 1), (2, 1), (1, 1), (3, 2), (1, 1), (2, 1)]
    log = _log([10, 20, 30, 40, 50, 60], pairs)
    first, second, third = movielens.cut_spans(log, 0.34, 2)
    # Span 1 ends after row 2 (round(0.34 * 6) = 2), span 2 after row 4.
    assert _rows(first[["user_id", "item_id", "timestamp"]]) == [
        ("u1", "i1", 10),
        ("u2", "i1", 20),
    ]
    assert _rows(second[["user_id", "item_id", "timestamp"]]) == [
        ("u2", "i1", 20),
        ("u1", "i1", 30),
        ("u3", "i2", 40),
    ]
    assert _rows(third[["user_id", "item_id", "timestamp"]]) == [
        ("u3", "i2", 40),
        ("u1", "i1", 50),
        ("u2", "i1", 60),
    ]
    newest = log.iloc[[3, 4, 5]]["rating"].tolist()
    assert third["rating"].tolist() == newest


def test_cut_spans_breaks_timestamp_ties_by_ids() -> None:
    log = _log([5, 5, 5, 5], [(2, 1), (10, 1), (1, 2), (1, 1)])
    last = movielens.cut_spans(log, 0.5, 1)[-1]
    assert list(zip(last["user_id"], last["item_id"], strict=True)) == [
        ("u1", "i1"),
        ("u1", "i2"),
        ("u10", "i1"),
        ("u2", "i1"),
    ]


def test_cut_spans_keeps_the_later_row_of_an_exact_tie() -> None:
    log = _log([7, 7, 7, 9], [(1, 1), (1, 1), (1, 1), (2, 2)])
    first, last = movielens.cut_spans(log, 0.75, 1)
    assert len(first) == 1
    assert first["rating"].tolist() == [log["rating"].iloc[2]]
    assert last["rating"].tolist() == log["rating"].iloc[2:].tolist()


def test_cut_spans_of_a_loaded_file(tmp_path) -> None:
    frame = movielens.load_movielens(_write_100k(tmp_path), "movielens-100k")
    frames = movielens.cut_spans(frame, 0.5, 2)
    assert len(frames) == 3
    assert [len(f) for f in frames] == [4, 5, 7]  # (u1, i10) rated twice
    last = frames[-1].set_index(["user_id", "item_id"])
    assert last.loc[("u1", "i10"), "rating"] == 2.0
    assert last.loc[("u1", "i10"), "timestamp"] == 881290000


@pytest.mark.parametrize(
    "initial_fraction", [0, 1, -0.1, 1.5, float("nan"), "0.5", True, None]
)
def test_cut_spans_rejects_bad_initial_fraction(initial_fraction) -> None:
    with pytest.raises(ValueError, match="initial_fraction") as raised:
        movielens.cut_spans(_log([1, 2, 3]), initial_fraction, 1)
    assert repr(initial_fraction) in str(raised.value)


@pytest.mark.parametrize("num_spans", [0, -1, 1.5, True, "2", None])
def test_cut_spans_rejects_bad_num_spans(num_spans) -> None:
    with pytest.raises(ValueError, match="num_spans") as raised:
        movielens.cut_spans(_log([1, 2, 3]), 0.5, num_spans)
    assert repr(num_spans) in str(raised.value)


@pytest.mark.parametrize(
    ("rows", "initial_fraction", "num_spans"),
    [(0, 0.5, 1), (3, 0.1, 1), (3, 0.5, 2), (4, 0.9, 1)],
)
def test_cut_spans_needs_a_row_per_span(rows, initial_fraction, num_spans):
    log = _log(list(range(rows)))
    with pytest.raises(ValueError, match="too few"):
        movielens.cut_spans(log, initial_fraction, num_spans)


def test_cut_spans_names_a_missing_column() -> None:
    with pytest.raises(ValueError, match="user_age"):
        movielens.cut_spans(_log([1, 2, 3]).drop(columns="user_age"), 0.5, 1)


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 20)),
        min_size=3,
        max_size=40,
    ),
    initial_fraction=st.floats(0.05, 0.95),
    num_spans=st.integers(1, 5),
)
def test_cut_spans_properties(events, initial_fraction, num_spans) -> None:
    pairs = [(u, i) for u, i, _ in events]
    log = _log([t for _, _, t in events], pairs)
    first = round(initial_fraction * len(log))
    if first < 1 or len(log) - first < num_spans:
        with pytest.raises(ValueError):
            movielens.cut_spans(log, initial_fraction, num_spans)
        return
    frames = movielens.cut_spans(log, initial_fraction, num_spans)
    assert len(frames) == num_spans + 1
    previous: set = set()
    for frame in frames:
        pairs_now = set(zip(frame["user_id"], frame["item_id"], strict=True))
        assert len(pairs_now) == len(frame)  # one row per pair
        assert previous <= pairs_now  # cumulative
        assert frame["timestamp"].is_monotonic_increasing
        previous = pairs_now
    # The last snapshot is the newest row of every pair in the whole log.
    ordered = log.sort_values(
        ["timestamp", "user_id", "item_id"], kind="mergesort"
    )
    newest = ordered.drop_duplicates(["user_id", "item_id"], keep="last")
    pd.testing.assert_frame_equal(frames[-1], newest.reset_index(drop=True))


def test_write_movielens_spans(tmp_path) -> None:
    source = _write_csv(tmp_path / "ml")
    out = tmp_path / "spans"
    paths = movielens.write_movielens_spans(
        source, "movielens-csv", out, 0.4, 2
    )
    assert paths == [out / f"span-{k}" / "interactions.csv" for k in (1, 2, 3)]
    assert snapshots.list_spans(out) == [1, 2, 3]
    expected = movielens.cut_spans(
        movielens.load_movielens(source, "movielens-csv"), 0.4, 2
    )
    for span, frame in enumerate(expected, start=1):
        pd.testing.assert_frame_equal(snapshots.read_span(out, span), frame)


def test_write_movielens_spans_checks_arguments_first(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_spans"):
        movielens.write_movielens_spans(
            tmp_path / "absent", "movielens-csv", tmp_path / "out", 0.5, 0
        )
    assert not (tmp_path / "out").exists()

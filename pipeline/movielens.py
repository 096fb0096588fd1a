"""Loads a MovieLens download and cuts it into cumulative span snapshots.

Two layouts are read, from a directory that the user downloaded (MovieLens
data may not be redistributed, so none is ever kept in this repository):

* ``"movielens-100k"``: ``u.data`` (tab separated: user id, item id,
  rating, timestamp), with ``u.item`` (``|`` separated, latin-1: movie id,
  title, release date like ``01-Jan-1995``, video release date, IMDb URL
  and one 0/1 flag per genre at the end), ``u.user`` (``|`` separated:
  user id, age, gender, occupation, zip code) and, optionally, ``u.genre``
  (``name|index`` lines) beside it;
* ``"movielens-csv"`` (ml-latest, ml-25m, ...): ``ratings.csv`` with the
  header ``userId,movieId,rating,timestamp`` and ``movies.csv`` with
  ``movieId,title,genres``, where the year ends the title, e.g. ``Toy
  Story (1995)``, and genres are ``|``-joined. There is no user file, so
  every user's age is 0 and occupation ``"unknown"``.
"""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np
import pandas as pd

from pipeline import snapshots

__all__ = [
    "FORMATS",
    "ML100K_GENRES",
    "cut_spans",
    "load_movielens",
    "write_movielens_spans",
]

FORMATS: tuple[str, ...] = ("movielens-100k", "movielens-csv")
"""The values ``load_movielens`` accepts for ``fmt``."""

ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The genres of MovieLens 100k in flag order, used without ``u.genre``."""

_NO_GENRES = "(no genres listed)"
# How u.item and u.user are read: "|"-separated latin-1 text, no header,
# every field kept as the string it is.
_PIPE_SEPARATED = {
    "sep": "|",
    "header": None,
    "dtype": str,
    "keep_default_na": False,
    "encoding": "latin-1",
    "quoting": csv.QUOTE_NONE,
}
_RATING_COLUMNS = ("user id", "item id", "rating", "timestamp")
_ITEM_COLUMNS = (
    "movie id",
    "movie title",
    "release date",
    "video release date",
    "IMDb URL",
)
_USER_COLUMNS = ("user id", "age", "gender", "occupation")
_CSV_RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
_CSV_MOVIE_COLUMNS = ("movieId", "title", "genres")
_TITLE_YEAR_RE = r"\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$"
_DATE_YEAR_RE = r"(\d{4})\s*$"
_MAX_YEAR = 2100
_MAX_AGE = 150


def load_movielens(path: str | os.PathLike[str], fmt: str) -> pd.DataFrame:
    """Loads all the ratings of a MovieLens download as one frame.

    Args:
        path: The download's directory, or its ratings file (``u.data``
            or ``ratings.csv``; the other files are looked up beside it).
        fmt: ``"movielens-100k"`` or ``"movielens-csv"``.

    Returns:
        Every rating, with the columns in ``snapshots.COLUMNS``, sorted by
        (timestamp, user_id, item_id). Ids carry the ``u``/``i`` prefixes;
        items missing from the item file get genres ``"unknown"`` and year
        0, users missing from the user file age 0 and occupation
        ``"unknown"``. A pair rated twice appears twice (``cut_spans``
        keeps the newest).

    Raises:
        ValueError: If ``fmt`` is unknown, or a file lacks a column or has
            a value that does not parse; the message names the file and the
            column.
        FileNotFoundError: If a required file is missing; the message names
            it.
    """
    if fmt == "movielens-100k":
        return _load_100k(pathlib.Path(path))
    if fmt == "movielens-csv":
        return _load_csv(pathlib.Path(path))
    raise ValueError(
        f"unknown MovieLens format {fmt!r}; expected one of {list(FORMATS)}"
    )


def cut_spans(
    frame: pd.DataFrame, initial_fraction: float, num_spans: int
) -> list[pd.DataFrame]:
    """Cuts a ratings log into cumulative snapshots by time.

    The log is sorted by (timestamp, user_id, item_id), keeping the input
    order among exact ties. Span 1 ends after the first ``initial_fraction``
    of the rows (rounded); the rest is cut into ``num_spans`` spans whose
    row counts differ by at most one. Cuts are by count, so rows with the
    same timestamp may fall into adjacent spans.

    Args:
        frame: Ratings with at least the columns in ``snapshots.COLUMNS``.
        initial_fraction: Share of the rows in span 1, strictly between 0
            and 1.
        num_spans: Number of spans after the first, at least 1.

    Returns:
        ``num_spans + 1`` snapshots. Snapshot ``k`` holds every row up to
        the end of span ``k`` with one row per (user_id, item_id) pair: the
        newest. Rows are in time order with a fresh index.

    Raises:
        ValueError: If an argument is out of range (the message shows the
            value received), a column is missing, or there are too few rows
            to give every span at least one.
    """
    _check_cut(initial_fraction, num_spans)
    missing = [name for name in snapshots.COLUMNS if name not in frame]
    if missing:
        raise ValueError(f"frame is missing column(s) {missing}")
    rows = len(frame)
    first = int(round(initial_fraction * rows))
    if first < 1 or rows - first < num_spans:
        raise ValueError(
            f"{rows} interaction(s) are too few for initial_fraction="
            f"{initial_fraction!r} and num_spans={num_spans!r}: every span "
            "needs at least one"
        )
    log = frame[list(snapshots.COLUMNS)].sort_values(
        list(snapshots.SORT_COLUMNS), kind="mergesort", ignore_index=True
    )
    ends = [first] + [
        first + ((rows - first) * k) // num_spans
        for k in range(1, num_spans + 1)
    ]
    following = _next_same_pair(log)
    position = np.arange(rows)
    return [
        log[(position < end) & (following >= end)].reset_index(drop=True)
        for end in ends
    ]


def write_movielens_spans(
    path: str | os.PathLike[str],
    fmt: str,
    out_root: str | os.PathLike[str],
    initial_fraction: float,
    num_spans: int,
) -> list[pathlib.Path]:
    """Loads a MovieLens download and writes its snapshots as spans.

    Snapshot ``k`` of ``cut_spans`` is written as span ``k`` (from 1)
    under ``out_root``. Spans there with the same numbers are replaced;
    other spans are left alone.

    Args:
        path: As for ``load_movielens``.
        fmt: As for ``load_movielens``.
        out_root: The directory to write the spans under.
        initial_fraction: As for ``cut_spans``.
        num_spans: As for ``cut_spans``.

    Returns:
        The ``num_spans + 1`` written CSV files, in span order.

    Raises:
        ValueError: As for ``load_movielens`` and ``cut_spans``.
        FileNotFoundError: As for ``load_movielens``.
    """
    _check_cut(initial_fraction, num_spans)
    frames = cut_spans(load_movielens(path, fmt), initial_fraction, num_spans)
    return [
        snapshots.write_span(out_root, span, frame)
        for span, frame in enumerate(frames, start=1)
    ]


# -- argument checks and shared helpers -----------------------------------


def _check_cut(initial_fraction: object, num_spans: object) -> None:
    if (
        isinstance(initial_fraction, bool)
        or not isinstance(initial_fraction, (int, float, np.number))
        or not 0 < initial_fraction < 1
    ):
        raise ValueError(
            "initial_fraction must be a number strictly between 0 and 1, "
            f"got {initial_fraction!r}"
        )
    if (
        isinstance(num_spans, bool)
        or not isinstance(num_spans, (int, np.integer))
        or num_spans < 1
    ):
        raise ValueError(
            f"num_spans must be an integer >= 1, got {num_spans!r}"
        )


def _next_same_pair(log: pd.DataFrame) -> np.ndarray:
    """For each row, the position of the next row with the same pair."""
    rows = len(log)
    users = pd.factorize(log["user_id"])[0].astype(np.int64)
    items, item_uniques = pd.factorize(log["item_id"])
    pair = users * max(len(item_uniques), 1) + items
    order = np.argsort(pair, kind="stable")
    following = np.full(rows, rows, dtype=np.int64)
    same = pair[order[1:]] == pair[order[:-1]]
    following[order[:-1][same]] = order[1:][same]
    return following


def _locate(path: pathlib.Path, data_name: str) -> tuple[pathlib.Path, ...]:
    """Returns (ratings file, directory) for a directory or a file path."""
    if path.is_dir():
        data = path / data_name
        if not data.is_file():
            raise FileNotFoundError(f"MovieLens file {data} not found")
        return data, path
    if path.is_file():
        return path, path.parent
    raise FileNotFoundError(f"MovieLens file or directory {path} not found")


def _require_file(directory: pathlib.Path, name: str, beside: str) -> None:
    if not (directory / name).is_file():
        raise FileNotFoundError(
            f"MovieLens file {directory / name} not found (it belongs "
            f"beside {beside})"
        )


def _read(path: pathlib.Path, **options: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"MovieLens file {path} is empty") from error
    except pd.errors.ParserError as error:
        raise ValueError(f"cannot parse MovieLens file {path}: {error}") from (
            error
        )


def _require_columns(
    table: pd.DataFrame, path: pathlib.Path, names: tuple[str, ...]
) -> None:
    """Checks a header-less table has a column for each of ``names``."""
    if table.shape[1] < len(names):
        missing = list(names[table.shape[1] :])
        raise ValueError(
            f"MovieLens file {path} has {table.shape[1]} column(s) but "
            f"needs {len(names)}; missing column(s) {missing}"
        )


def _numbers(
    values: pd.Series, path: pathlib.Path, column: str, integer: bool
) -> np.ndarray:
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna().to_numpy()
    if integer and not bad.all():
        finite = np.isfinite(parsed.to_numpy(dtype=np.float64))
        whole = ~finite | (parsed.to_numpy(dtype=np.float64) % 1 == 0)
        bad |= ~whole
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"MovieLens file {path}: column {column!r} has the value "
            f"{values.iloc[row]!r}, which is not a "
            f"{'whole number' if integer else 'number'} (data row {row + 1})"
        )
    if integer:
        return parsed.to_numpy(dtype=np.float64).astype(np.int64)
    return parsed.to_numpy(dtype=np.float64)


def _ids(
    values: pd.Series, path: pathlib.Path, column: str, prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (codes, keys): row ``r`` has the key ``keys[codes[r]]``."""
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise ValueError(
            f"MovieLens file {path}: column {column!r} is empty in data row "
            f"{row + 1}"
        )
    codes, uniques = pd.factorize(values)
    keys = []
    for raw in uniques:
        text = str(raw).strip()
        if not text:
            raise ValueError(
                f"MovieLens file {path}: column {column!r} has an empty id"
            )
        keys.append(prefix + text)
    return codes.astype(np.int64), np.array(keys, dtype=object)


def _raw_ids(values: pd.Series) -> np.ndarray:
    """The ids of a lookup table, as the text after the key prefix."""
    return values.astype(str).str.strip().to_numpy(dtype=object)


def _years(values: pd.Series, pattern: str) -> np.ndarray:
    found = values.astype(str).str.extract(pattern, expand=False)
    years = pd.to_numeric(found, errors="coerce").fillna(0)
    years = years.to_numpy(dtype=np.int64)
    years[(years < 0) | (years > _MAX_YEAR)] = 0
    return years


def _assemble(
    path: pathlib.Path,
    ratings: pd.DataFrame,
    columns: tuple[str, ...],
    items: dict[str, tuple[str, int]],
    users: dict[str, tuple[int, str]],
) -> pd.DataFrame:
    """Builds the snapshot-shaped frame from a parsed ratings table."""
    user_col, item_col, rating_col, time_col = (ratings[c] for c in columns)
    user_codes, user_keys = _ids(user_col, path, columns[0], "u")
    item_codes, item_keys = _ids(item_col, path, columns[1], "i")
    rating = _numbers(rating_col, path, columns[2], integer=False)
    timestamp = _numbers(time_col, path, columns[3], integer=True)

    unknown_item = (snapshots.UNKNOWN, 0)
    unknown_user = (0, snapshots.UNKNOWN)
    item_info = [items.get(key[1:], unknown_item) for key in item_keys]
    user_info = [users.get(key[1:], unknown_user) for key in user_keys]
    genres = np.array([info[0] for info in item_info], dtype=object)
    years = np.array([info[1] for info in item_info], dtype=np.int64)
    ages = np.array([info[0] for info in user_info], dtype=np.int64)
    jobs = np.array([info[1] for info in user_info], dtype=object)

    order = np.lexsort(
        (
            _ranks(item_keys)[item_codes],
            _ranks(user_keys)[user_codes],
            timestamp,
        )
    )
    user_codes = user_codes[order]
    item_codes = item_codes[order]
    return pd.DataFrame(
        {
            "user_id": user_keys[user_codes],
            "item_id": item_keys[item_codes],
            "rating": rating[order],
            "timestamp": timestamp[order],
            "item_genres": genres[item_codes],
            "item_year": years[item_codes],
            "user_age": ages[user_codes],
            "user_occupation": jobs[user_codes],
        },
        columns=list(snapshots.COLUMNS),
    )


def _ranks(keys: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(keys), dtype=np.int64)
    ranks[np.argsort(keys, kind="stable")] = np.arange(len(keys))
    return ranks


# -- MovieLens 100k -------------------------------------------------------


def _load_100k(path: pathlib.Path) -> pd.DataFrame:
    data, directory = _locate(path, "u.data")
    _require_file(directory, "u.item", data.name)
    _require_file(directory, "u.user", data.name)
    # Some copies of u.data open with a "#user id | item id | ..." line.
    ratings = _read(
        data,
        sep="\t",
        header=None,
        dtype=str,
        keep_default_na=False,
        comment="#",
    )
    _require_columns(ratings, data, _RATING_COLUMNS)
    ratings = ratings.iloc[:, : len(_RATING_COLUMNS)]
    ratings.columns = list(_RATING_COLUMNS)
    ratings = ratings.replace("", np.nan)
    genre_names = _genres_100k(directory / "u.genre")
    items = _items_100k(directory / "u.item", genre_names)
    users = _users_100k(directory / "u.user")
    return _assemble(data, ratings, _RATING_COLUMNS, items, users)


def _genres_100k(path: pathlib.Path) -> tuple[str, ...]:
    if not path.is_file():
        return ML100K_GENRES
    by_index = {}
    with open(path, encoding="latin-1") as source:
        for number, line in enumerate(source, start=1):
            text = line.strip()
            if not text:
                continue
            name, sep, index = text.rpartition("|")
            if not sep or not name or not index.strip().isdigit():
                raise ValueError(
                    f"MovieLens file {path}: line {number} is {text!r}, "
                    "expected 'genre name|index'"
                )
            by_index[int(index)] = (name.strip(), number)
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        wrong = [
            f"line {number} ({name}|{index})"
            for index, (name, number) in sorted(by_index.items())
            if index >= len(by_index)
        ]
        raise ValueError(
            f"MovieLens file {path}: genre indexes {sorted(by_index)} are "
            f"not 0, 1, 2, ...; out of place: {', '.join(wrong)}"
        )
    return tuple(by_index[k][0] for k in range(len(by_index)))


def _items_100k(
    path: pathlib.Path, genre_names: tuple[str, ...]
) -> dict[str, tuple[str, int]]:
    table = _read(path, **_PIPE_SEPARATED)
    needed = _ITEM_COLUMNS + tuple(f"genre {g!r}" for g in genre_names)
    _require_columns(table, path, needed)
    flags = table.iloc[:, -len(genre_names) :].to_numpy(dtype=str)
    flags = np.char.strip(flags)
    valid = (flags == "0") | (flags == "1")
    if not valid.all():
        column = genre_names[int(np.flatnonzero(~valid.all(axis=0))[0])]
        raise ValueError(
            f"MovieLens file {path}: the flag column of genre {column!r} "
            "holds a value other than 0 or 1"
        )
    chosen = flags == "1"
    names = np.array(genre_names, dtype=object)
    genres = [_join_genres(list(names[row])) for row in chosen]
    years = _years(table.iloc[:, 2], _DATE_YEAR_RE)
    ids = _raw_ids(table.iloc[:, 0])
    return _first_per_id(ids, genres, years.tolist())


def _users_100k(path: pathlib.Path) -> dict[str, tuple[int, str]]:
    table = _read(path, **_PIPE_SEPARATED)
    _require_columns(table, path, _USER_COLUMNS)
    ages = pd.to_numeric(table.iloc[:, 1].str.strip(), errors="coerce")
    ages = ages.where((ages >= 0) & (ages <= _MAX_AGE) & (ages % 1 == 0))
    ages = ages.fillna(0).to_numpy(dtype=np.int64)
    jobs = table.iloc[:, 3].str.strip().replace("", snapshots.UNKNOWN)
    ids = _raw_ids(table.iloc[:, 0])
    return _first_per_id(ids, ages.tolist(), jobs.tolist())


def _join_genres(names: list[str]) -> str:
    known = [name for name in names if name != snapshots.UNKNOWN]
    return "|".join(known) if known else snapshots.UNKNOWN


def _first_per_id(ids: np.ndarray, first: list, second: list) -> dict:
    """Maps each id to its (first, second) values; the first row wins."""
    table = {}
    for key, *value in zip(ids, first, second, strict=True):
        table.setdefault(key, tuple(value))
    return table


# -- MovieLens CSV (ml-latest, ml-25m, ...) -------------------------------


def _load_csv(path: pathlib.Path) -> pd.DataFrame:
    data, directory = _locate(path, "ratings.csv")
    _require_file(directory, "movies.csv", data.name)
    ratings = _read(data, usecols=_header_check(data, _CSV_RATING_COLUMNS))
    items = _movies_csv(directory / "movies.csv")
    return _assemble(data, ratings, _CSV_RATING_COLUMNS, items, {})


def _header_check(path: pathlib.Path, names: tuple[str, ...]) -> list[str]:
    """Checks a CSV file's header holds ``names``; returns them."""
    with open(path, encoding="utf-8", newline="") as source:
        header = next(csv.reader(source), [])
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(
            f"MovieLens file {path} lacks column(s) {missing}; its header "
            f"is {header}"
        )
    return list(names)


def _movies_csv(path: pathlib.Path) -> dict[str, tuple[str, int]]:
    table = _read(
        path,
        usecols=_header_check(path, _CSV_MOVIE_COLUMNS),
        dtype=str,
        keep_default_na=False,
        encoding="utf-8",
    )
    genres = table["genres"].str.strip()
    genres = genres.where(
        (genres != "") & (genres != _NO_GENRES), snapshots.UNKNOWN
    )
    years = _years(table["title"], _TITLE_YEAR_RE)
    ids = _raw_ids(table["movieId"])
    return _first_per_id(ids, genres.tolist(), years.tolist())

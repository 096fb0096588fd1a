"""On-disk layout of the interaction snapshots, one directory per span.

A snapshot is the full state of the user-item interactions as of the end of
a span (not the increment since the previous span): every (user_id, item_id)
pair appears at most once in it. Span ``n`` lives in
``<root>/span-<n>/interactions.csv``, which is the layout that TFX's
``CsvExampleGen`` reads with the input pattern ``span-{SPAN}/*``.

``CsvExampleGen`` infers each column's type from its text, so the writer
keeps the text unambiguous: ids carry a letter prefix (``u`` for users, ``i``
for items) so they never parse as numbers, and ratings always have one
decimal place so the column is a float even when every rating is whole.
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS",
    "DTYPES",
    "FILE_NAME",
    "ID_COLUMNS",
    "UNKNOWN",
    "item_key",
    "list_spans",
    "SORT_COLUMNS",
    "read_span",
    "sort_snapshot",
    "span_dir",
    "user_key",
    "validate_snapshot",
    "write_span",
]

COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "rating",
    "timestamp",
    "item_genres",
    "item_year",
    "user_age",
    "user_occupation",
)
"""The snapshot columns, in the order they are written."""

DTYPES: dict[str, str] = {
    "user_id": "object",
    "item_id": "object",
    "rating": "float64",
    "timestamp": "int64",
    "item_genres": "object",
    "item_year": "int64",
    "user_age": "int64",
    "user_occupation": "object",
}
"""The pandas dtype of each column in a validated snapshot."""

ID_COLUMNS: tuple[str, str] = ("user_id", "item_id")
"""The columns that identify a row: a snapshot has each pair once."""

FILE_NAME = "interactions.csv"
"""The name of the CSV file inside each span directory."""

UNKNOWN = "unknown"
"""The value of a string feature that is not known."""

SORT_COLUMNS: tuple[str, ...] = ("timestamp", "user_id", "item_id")
"""The order of the rows in a written snapshot."""

# Inclusive value ranges, the same as the domains in schema/schema.pbtxt.
_RANGES: dict[str, tuple[float, float]] = {
    "rating": (0.5, 5.0),
    "timestamp": (0, 2**62),
    "item_year": (0, 2100),
    "user_age": (0, 150),
}
_STRING_COLUMNS = ("user_id", "item_id", "item_genres", "user_occupation")
_INT_COLUMNS = ("timestamp", "item_year", "user_age")
_SPAN_DIR_RE = re.compile(r"span-(0|[1-9][0-9]*)")
_SPAN_PREFIX = "span-"


def user_key(raw: object) -> str:
    """Returns the snapshot id of a user.

    Args:
        raw: The user's id in the source data, e.g. ``42`` or ``"42"``.

    Returns:
        The id with a ``u`` prefix, e.g. ``"u42"``, which cannot be parsed as
        a number.

    Raises:
        ValueError: If ``raw`` is empty.
    """
    return _key("u", raw)


def item_key(raw: object) -> str:
    """Returns the snapshot id of an item.

    Args:
        raw: The item's id in the source data, e.g. ``7`` or ``"7"``.

    Returns:
        The id with an ``i`` prefix, e.g. ``"i7"``.

    Raises:
        ValueError: If ``raw`` is empty.
    """
    return _key("i", raw)


def _key(prefix: str, raw: object) -> str:
    text = str(raw).strip()
    if not text:
        raise ValueError(f"an id must not be empty, got {raw!r}")
    return prefix + text


def span_dir(root: str | os.PathLike[str], span: int) -> pathlib.Path:
    """Returns the directory of one span.

    Args:
        root: The directory that holds all the spans.
        span: The span number, a non-negative integer.

    Returns:
        ``<root>/span-<span>``.

    Raises:
        ValueError: If ``span`` is not a non-negative integer.
    """
    _check_span(span)
    return pathlib.Path(root) / f"{_SPAN_PREFIX}{int(span)}"


def _check_span(span: object) -> None:
    if (
        isinstance(span, bool)
        or not isinstance(span, (int, np.integer))
        or span < 0
    ):
        raise ValueError(f"span must be a non-negative integer, got {span!r}")


def validate_snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """Checks a snapshot and returns it in the canonical form.

    Args:
        frame: A frame with at least the columns in ``COLUMNS``; other
            columns are ignored.

    Returns:
        A new frame with exactly ``COLUMNS`` in order, the ``DTYPES``, and a
        fresh index. Rows keep their order.

    Raises:
        ValueError: If a column is missing, holds nulls or empty strings,
            holds values of the wrong type or outside the schema's range,
            if an id would parse as a number, or if a (user_id, item_id)
            pair appears twice. The message names the column.
    """
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(
            f"snapshot is missing column(s) {missing}; expected {list(COLUMNS)}"
        )
    out = {}
    for name in COLUMNS:
        column = frame[name]
        if isinstance(column, pd.DataFrame):
            raise ValueError(f"column {name!r} appears more than once")
        if column.isna().any():
            raise ValueError(
                f"column {name!r} has {int(column.isna().sum())} null value(s)"
            )
        if name in _STRING_COLUMNS:
            out[name] = _check_strings(name, column)
        else:
            out[name] = _check_numbers(name, column)
    result = pd.DataFrame(out, columns=list(COLUMNS))
    pairs = result.duplicated(list(ID_COLUMNS), keep=False)
    if pairs.any():
        first = result.loc[pairs, list(ID_COLUMNS)].iloc[0]
        raise ValueError(
            f"columns 'user_id', 'item_id': {int(pairs.sum())} rows repeat a "
            f"pair, e.g. ({first['user_id']!r}, {first['item_id']!r}); a "
            "snapshot holds each pair at most once"
        )
    return result


def _check_strings(name: str, column: pd.Series) -> np.ndarray:
    values = column.to_numpy(dtype=object)
    for value in pd.unique(values):
        if not isinstance(value, str):
            raise ValueError(
                f"column {name!r} must hold strings, got {value!r}"
            )
        if not value.strip():
            raise ValueError(f"column {name!r} has an empty value")
        if "\n" in value or "\r" in value:
            raise ValueError(f"column {name!r} has a line break in {value!r}")
        if name in ID_COLUMNS and _parses_as_number(value):
            raise ValueError(
                f"column {name!r} has the id {value!r}, which parses as a "
                "number; build ids with user_key() and item_key()"
            )
    return values


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_numbers(name: str, column: pd.Series) -> np.ndarray:
    if not (
        pd.api.types.is_numeric_dtype(column)
        and not pd.api.types.is_bool_dtype(column)
    ):
        raise ValueError(
            f"column {name!r} must be numeric, got dtype {column.dtype}"
        )
    values = column.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"column {name!r} has non-finite values")
    if name in _INT_COLUMNS:
        if (values != np.round(values)).any():
            raise ValueError(f"column {name!r} must hold whole numbers")
        exact = column.to_numpy()
        values = (
            exact.astype(np.int64)
            if pd.api.types.is_integer_dtype(column)
            else values.astype(np.int64)
        )
    low, high = _RANGES[name]
    bad = (values < low) | (values > high)
    if bad.any():
        raise ValueError(
            f"column {name!r} has {int(bad.sum())} value(s) outside "
            f"[{low}, {high}], e.g. {values[bad][0]!r}"
        )
    return values


def sort_snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """Sorts a snapshot by (timestamp, user_id, item_id).

    Args:
        frame: A frame with those three columns.

    Returns:
        A new frame in that order with a fresh index.
    """
    return frame.sort_values(
        list(SORT_COLUMNS), kind="mergesort", ignore_index=True
    )


def write_span(
    root: str | os.PathLike[str], span: int, frame: pd.DataFrame
) -> pathlib.Path:
    """Writes one snapshot as ``<root>/span-<span>/interactions.csv``.

    The frame is validated first. The file has a header row, the columns
    in ``COLUMNS`` order, rows sorted by (timestamp, user_id, item_id), and
    ratings with one decimal place (rounded to it). It is written to a
    temporary file in the span directory and then renamed over the target,
    so a reader never sees half a file.

    Args:
        root: The directory that holds all the spans; created if needed.
        span: The span number, a non-negative integer.
        frame: The snapshot: the full state as of this span.

    Returns:
        The path of the written CSV file.

    Raises:
        ValueError: If the span number or the frame is invalid (see
            ``validate_snapshot``); the message names the column.
    """
    directory = span_dir(root, span)
    snapshot = sort_snapshot(validate_snapshot(frame))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / FILE_NAME
    handle, temp_name = tempfile.mkstemp(
        dir=directory, prefix=f".{FILE_NAME}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            snapshot.to_csv(
                out, index=False, float_format="%.1f", lineterminator="\n"
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except BaseException:
        # The temporary file may already be gone if os.replace succeeded.
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return target


def read_span(root: str | os.PathLike[str], span: int) -> pd.DataFrame:
    """Reads one snapshot back.

    Args:
        root: The directory that holds all the spans.
        span: The span number.

    Returns:
        The snapshot with ``COLUMNS`` in order and the ``DTYPES``.

    Raises:
        FileNotFoundError: If the span's file does not exist.
        ValueError: If the file's header is not ``COLUMNS``.
    """
    path = span_dir(root, span) / FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no snapshot file {path}")
    with open(path, encoding="utf-8", newline="") as source:
        header = source.readline().rstrip("\r\n").split(",")
    if header != list(COLUMNS):
        raise ValueError(
            f"{path} has the header {header}; expected {list(COLUMNS)}"
        )
    string_types = {name: str for name in _STRING_COLUMNS}
    frame = pd.read_csv(
        path,
        dtype={**DTYPES, **string_types},
        keep_default_na=False,
        na_filter=False,
        encoding="utf-8",
    )
    return frame.astype(DTYPES)


def list_spans(root: str | os.PathLike[str]) -> list[int]:
    """Lists the spans that have a snapshot file under ``root``.

    Args:
        root: The directory that holds all the spans; it may not exist.

    Returns:
        The span numbers, in increasing order. Directories that are not
        named ``span-<n>`` or hold no snapshot file are ignored.
    """
    base = pathlib.Path(root)
    if not base.is_dir():
        return []
    spans = []
    for entry in base.iterdir():
        match = _SPAN_DIR_RE.fullmatch(entry.name)
        if match and (entry / FILE_NAME).is_file():
            spans.append(int(match.group(1)))
    return sorted(spans)

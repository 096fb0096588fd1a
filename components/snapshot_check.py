"""Checks the CSV files of a span before anything is built from them.

ExampleValidator compares statistics with the schema: it names a feature,
never the file or the row, and it runs after ExampleGen has read the whole
span. `TemporalExampleGen` calls `check_span` first, on the raw files, and
stops the run with a `SnapshotError` whose lines read

    span 2, file data/span-2/interactions.csv, row 17, field rating: ...

Rows are counted as a spreadsheet shows them: the header is row 1, the
first record row 2 (the line number, as the files hold no line breaks
inside fields). What is checked, against the curated schema:

- the span has files and rows; each file has a header holding every
  feature of the schema, and no column the schema does not know;
- every row has a value in every field; ids are not empty nor spelled as
  a null (`null`, `None`, `NaN`, ...);
- INT fields are whole numbers and FLOAT fields numbers, within the
  schema's domains; a column ExampleGen would read as another type than
  the schema's (a BYTES column of numbers only, a FLOAT column of whole
  numbers only) is reported with an example row;
- no timestamp is later than the time of the check plus a clock skew;
- pairs of ids repeat in at most a small share of the rows (a few are
  tolerated, with a warning naming them: the delta keeps the newest);
- against the previous span under the same data root: the newest
  timestamp does not go back in time, and the row count does not grow
  more than a set factor (an anomaly, as a tenfold snapshot is more often
  a bad export than growth).

The files are read once, in chunks, with pandas' C parser; the values are
checked with Arrow's compute functions, and the pairs kept as 64-bit
hashes with their places: about two seconds and 24 MB per million rows on
one core. The previous span's timestamp column is read as well.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from absl import logging
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

__all__ = [
    "CheckConfig",
    "NULL_SPELLINGS",
    "SnapshotError",
    "SpanFacts",
    "check_span",
    "previous_span",
    "read_schema",
    "span_facts",
]

NULL_SPELLINGS = frozenset(
    {"null", "none", "nan", "n/a", "na", "<na>", "nil", "undefined"}
)
"""Spellings of a missing value (any case) that no id may have."""

_CHUNK_ROWS = 200_000
_MAX_PROBLEMS = 20
_INT_RE = r"[+-]?[0-9]+"
# What Python's float() reads (inf and nan too, in any case).
_NUMBER_RE = (
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|(?i:[+-]?(?:inf|infinity|nan))"
)
_NULLS = pa.array(sorted(NULL_SPELLINGS), pa.large_string())
# int64 holds 18 digits whatever they are.
_SAFE_INT_DIGITS = 18


class SnapshotError(ValueError):
    """The files of a span are not a snapshot the pipeline can train on."""


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """What `check_span` checks beyond the schema.

    Attributes:
      id_columns: the columns that identify a row; a snapshot holds each
        combination once.
      time_column: the INT column of event times, in seconds since the
        epoch.
      max_clock_skew_seconds: how far past the time of the check a
        timestamp may be.
      max_growth: the most a span may have times the previous span's
        rows; 0 checks nothing.
      max_duplicate_fraction: the largest share of rows that may repeat
        an earlier row's ids; a few repeats are logged, more stop the run.
    """

    id_columns: tuple[str, ...] = ("user_id", "item_id")
    time_column: str = "timestamp"
    max_clock_skew_seconds: int = 3600
    max_growth: float = 10.0
    max_duplicate_fraction: float = 0.05

    def __post_init__(self):
        if self.max_clock_skew_seconds < 0:
            raise ValueError(
                "max_clock_skew_seconds must be >= 0, got "
                f"{self.max_clock_skew_seconds}."
            )
        if self.max_growth < 0:
            raise ValueError(f"max_growth must be >= 0, got {self.max_growth}.")
        if not 0 <= self.max_duplicate_fraction <= 1:
            raise ValueError(
                "max_duplicate_fraction must be in [0, 1], got "
                f"{self.max_duplicate_fraction}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        values = dataclasses.asdict(self)
        values["id_columns"] = list(self.id_columns)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> CheckConfig:
        """The config of `to_dict`'s values; defaults for what is absent."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown snapshot check settings {unknown}.")
        if "id_columns" in values:
            values["id_columns"] = tuple(values["id_columns"])
        for name in ("max_clock_skew_seconds",):
            if name in values:
                values[name] = int(values[name])
        for name in ("max_growth", "max_duplicate_fraction"):
            if name in values:
                values[name] = float(values[name])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Where:
    """A place in a span: a file and a row (the header is row 1)."""

    file: str
    row: int


@dataclasses.dataclass(frozen=True)
class SpanFacts:
    """What the checks of the next span need to know of a span.

    Attributes:
      span: the span number.
      rows: record rows in its files.
      newest: its newest timestamp; None when it has no valid one.
      newest_at: where the newest timestamp is.
    """

    span: int
    rows: int
    newest: int | None
    newest_at: Where | None


def read_schema(path: str) -> schema_pb2.Schema:
    """The schema in a `schema.pbtxt` file."""
    with tf.io.gfile.GFile(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def _time_text(seconds: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "out of calendar range"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class _Problems:
    """Problem lines of one span, at most `_MAX_PROBLEMS` listed."""

    def __init__(self, span: int):
        self.span = span
        self.lines: list[str] = []
        self.more = 0

    def add(
        self,
        text: str,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        if len(self.lines) >= _MAX_PROBLEMS:
            self.more += 1
            return
        where = [f"span {self.span}"]
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field}")
        self.lines.append(f"{', '.join(where)}: {text}")

    def raise_if_any(self, files: Sequence[str]) -> None:
        if not self.lines:
            return
        more = f"\n  ... and {self.more} more" if self.more else ""
        raise SnapshotError(
            f"Span {self.span} ({len(files)} file(s)) is not a valid "
            "snapshot; the run stops before Transform, nothing is trained "
            "or pushed, and the served model stays as it is:\n  "
            + "\n  ".join(self.lines)
            + more
        )


@dataclasses.dataclass
class _Column:
    """What is known of one column over every chunk read so far."""

    feature: schema_pb2.Feature
    # Every value so far is a number (BYTES) or a whole number (FLOAT):
    # ExampleGen would then infer another type than the schema's.
    all_numeric: bool = True
    example: Where | None = None
    example_value: str = ""
    bad: dict[str, list[Any]] = dataclasses.field(default_factory=dict)

    def flag(self, kind: str, where: Where, value: str, count: int) -> None:
        """Counts rows with a problem of `kind`; keeps the first's place."""
        if kind in self.bad:
            self.bad[kind][2] += count
        else:
            self.bad[kind] = [where, value, count]


class _GFileReader(io.RawIOBase):
    """A GFile (local, gs://, ...) as the raw stream pandas reads."""

    def __init__(self, path: str):
        self._file = tf.io.gfile.GFile(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._file.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def _open(path: str) -> io.BufferedReader:
    return io.BufferedReader(_GFileReader(path), buffer_size=1 << 20)


def _chunks(path: str, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The file's records as strings, in chunks, with their row numbers.

    Blank lines are kept as rows, so that row numbers stay line numbers.
    """
    with _open(path) as f:
        reader = pd.read_csv(
            f,
            header=0,
            names=columns,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            # A row with more fields than the header is a parser error
            # naming its line, not a shifted row.
            index_col=False,
            chunksize=_CHUNK_ROWS,
            encoding="utf-8",
            engine="c",
        )
        first = 2
        for chunk in reader:
            chunk.index = pd.RangeIndex(first, first + len(chunk))
            first += len(chunk)
            yield chunk


def _header(path: str) -> list[str] | None:
    """The header fields of a CSV file; None when the file is empty."""
    with tf.io.gfile.GFile(path, "rb") as f:
        line = f.readline()
    if not line.strip():
        return None
    return next(csv.reader(io.StringIO(line.decode("utf-8"))))


def _row_text(path: str, row: int) -> list[str]:
    """The fields of one row of a file (the header is row 1)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if number == row:
                return next(csv.reader(io.StringIO(line.decode("utf-8"))))
    return []


def _wrong_length(path: str, fields: int) -> tuple[int, int] | None:
    """The first row whose field count is not `fields`, and its count."""
    with tf.io.gfile.GFile(path, "rb") as f:
        lines = (line.decode("utf-8") for line in f)
        for number, row in enumerate(csv.reader(lines), start=1):
            if row and len(row) != fields:
                return number, len(row)
    return None


def _mask(array: pa.Array) -> np.ndarray:
    """A pyarrow array as a numpy array (booleans as bools)."""
    return array.to_numpy(zero_copy_only=False)


def _matches(values: pa.Array, pattern: str) -> pa.Array:
    """Whether each whole value matches `pattern` (RE2 syntax)."""
    return pc.match_substring_regex(values, f"^(?:{pattern})$")


class _FileChecker:
    """Checks the rows of one span's files, chunk after chunk."""

    def __init__(
        self,
        schema: schema_pb2.Schema,
        config: CheckConfig,
        now: float,
        problems: _Problems,
    ):
        self._config = config
        self._latest = int(now) + config.max_clock_skew_seconds
        self._now = int(now)
        self._problems = problems
        self.columns = {f.name: _Column(f) for f in schema.feature}
        self.rows = 0
        self.newest: int | None = None
        self.newest_at: Where | None = None
        self.future: list[Any] | None = None
        self.hashes: list[np.ndarray] = []
        self.places: list[tuple[int, np.ndarray]] = []

    def check_file(self, index: int, path: str) -> None:
        try:
            header = _header(path)
        except (UnicodeDecodeError, csv.Error) as error:
            self._problems.add(f"the header cannot be read ({error})", path, 1)
            return
        if header is None:
            self._problems.add("the file is empty: no header, no rows", path)
            return
        names = [name.strip() for name in header]
        repeated = sorted({n for n in names if names.count(n) > 1})
        for name in repeated:
            self._problems.add("the column appears twice", path, 1, name)
        missing = [name for name in self.columns if name not in names]
        for name in missing:
            self._problems.add(
                f"column missing; the header has {names}", path, 1, name
            )
        for name in names:
            if name not in self.columns:
                self._problems.add(
                    "column not in the schema; ExampleGen would add it as a "
                    "feature the schema does not know",
                    path,
                    1,
                    name,
                )
        if missing or repeated:
            return
        try:
            with warnings.catch_warnings():
                # Pandas only warns when the first rows are too long.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                for chunk in _chunks(path, names):
                    self._check_chunk(index, path, chunk)
        except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
            found = _wrong_length(path, len(names))
            if found is None:
                self._problems.add(f"the file cannot be parsed: {error}", path)
            else:
                row, fields = found
                self._problems.add(
                    f"the row has {fields} fields, the header {len(names)}",
                    path,
                    row,
                )
        except UnicodeDecodeError as error:
            self._problems.add(f"the file is not UTF-8 text: {error}", path)

    def _check_chunk(self, index: int, path: str, chunk: pd.DataFrame) -> None:
        self.rows += len(chunk)
        rows = chunk.index.to_numpy()
        for name, column in self.columns.items():
            raw = chunk[name].to_numpy(dtype=object)
            self._check_column(path, column, raw, rows)
        ids = list(self._config.id_columns)
        if all(name in chunk for name in ids):
            self.hashes.append(
                pd.util.hash_pandas_object(
                    chunk[ids].fillna(""), index=False
                ).to_numpy()
            )
            self.places.append((index, rows))

    def _flag(
        self,
        column: _Column,
        kind: str,
        path: str,
        mask: np.ndarray,
        rows: np.ndarray,
        raw: np.ndarray | None,
    ) -> None:
        """Counts the rows of `mask` as having a problem of `kind`."""
        if not mask.any():
            return
        first = int(np.argmax(mask))
        value = "" if raw is None else str(raw[first])
        column.flag(kind, Where(path, int(rows[first])), value, int(mask.sum()))

    def _check_column(
        self, path: str, column: _Column, raw: np.ndarray, rows: np.ndarray
    ) -> None:
        feature = column.feature
        text = pa.array(raw, type=pa.large_string(), from_pandas=True)
        stripped = pc.utf8_trim_whitespace(text)
        # A row with fewer fields than the header reads as empty values.
        empty = _mask(pc.fill_null(pc.equal(stripped, ""), True))
        if feature.presence.min_fraction >= 1.0:
            kind = "the value is empty or missing"
            self._flag(column, kind, path, empty, rows, None)
        keep = ~empty
        present, rows, raw = (
            stripped.filter(pa.array(keep)),
            rows[keep],
            raw[keep],
        )
        if feature.type == schema_pb2.BYTES:
            self._check_bytes(path, column, present, rows, raw)
        elif feature.type == schema_pb2.INT:
            self._check_int(path, column, present, rows, raw)
        elif feature.type == schema_pb2.FLOAT:
            self._check_float(path, column, present, rows, raw)

    def _note_numeric(
        self,
        path: str,
        column: _Column,
        values: pa.Array,
        rows: np.ndarray,
        raw: np.ndarray,
        pattern: str,
    ) -> None:
        if not column.all_numeric or not len(values):
            return
        if not _mask(_matches(values, pattern)).all():
            column.all_numeric = False
        elif column.example is None:
            column.example = Where(path, int(rows[0]))
            column.example_value = str(raw[0])

    def _check_bytes(
        self,
        path: str,
        column: _Column,
        values: pa.Array,
        rows: np.ndarray,
        raw: np.ndarray,
    ) -> None:
        if column.feature.name in self._config.id_columns:
            null = _mask(pc.is_in(pc.utf8_lower(values), value_set=_NULLS))
            self._flag(column, "the id is a null", path, null, rows, raw)
        self._note_numeric(path, column, values, rows, raw, _NUMBER_RE)

    def _check_int(
        self,
        path: str,
        column: _Column,
        values: pa.Array,
        rows: np.ndarray,
        raw: np.ndarray,
    ) -> None:
        whole = _mask(_matches(values, _INT_RE))
        self._flag(column, "not a whole number", path, ~whole, rows, raw)
        digits = _mask(
            pc.utf8_length(pc.utf8_ltrim(pc.utf8_ltrim(values, "+-"), "0"))
        )
        huge = whole & (digits > _SAFE_INT_DIGITS)
        kind = "too large for a 64-bit integer"
        self._flag(column, kind, path, huge, rows, raw)
        ok = whole & ~huge
        numbers = (
            values.filter(pa.array(ok))
            .to_numpy(zero_copy_only=False)
            .astype(np.int64)
        )
        self._check_domain(path, column, numbers, rows[ok], raw[ok])
        if column.feature.name == self._config.time_column and len(numbers):
            self._check_time(path, numbers, rows[ok])

    def _check_float(
        self,
        path: str,
        column: _Column,
        values: pa.Array,
        rows: np.ndarray,
        raw: np.ndarray,
    ) -> None:
        parses = _mask(_matches(values, _NUMBER_RE))
        numbers = np.full(len(values), np.nan)
        numbers[parses] = (
            values.filter(pa.array(parses))
            .to_numpy(zero_copy_only=False)
            .astype(np.float64)
        )
        finite = np.isfinite(numbers)
        self._flag(column, "not a finite number", path, ~finite, rows, raw)
        self._check_domain(
            path, column, numbers[finite], rows[finite], raw[finite]
        )
        self._note_numeric(
            path,
            column,
            values.filter(pa.array(finite)),
            rows[finite],
            raw[finite],
            _INT_RE,
        )

    def _check_domain(
        self,
        path: str,
        column: _Column,
        numbers: np.ndarray,
        rows: np.ndarray,
        raw: np.ndarray,
    ) -> None:
        feature = column.feature
        if feature.HasField("int_domain"):
            domain = feature.int_domain
        elif feature.HasField("float_domain"):
            domain = feature.float_domain
        else:
            return
        low = domain.min if domain.HasField("min") else None
        high = domain.max if domain.HasField("max") else None
        outside = np.zeros(len(numbers), bool)
        if low is not None:
            outside |= numbers < low
        if high is not None:
            outside |= numbers > high
        bounds = f"[{'-inf' if low is None else low}, "
        bounds += f"{'inf' if high is None else high}]"
        kind = f"outside the schema's domain {bounds}"
        self._flag(column, kind, path, outside, rows, raw)

    def _check_time(
        self, path: str, numbers: np.ndarray, rows: np.ndarray
    ) -> None:
        position = int(np.argmax(numbers))
        newest = int(numbers[position])
        if self.newest is None or newest > self.newest:
            self.newest = newest
            self.newest_at = Where(path, int(rows[position]))
        future = numbers > self._latest
        if future.any():
            first = int(np.argmax(future))
            if self.future is None:
                where = Where(path, int(rows[first]))
                self.future = [where, int(numbers[first]), 0]
            self.future[2] += int(future.sum())

    def report(self) -> None:
        """Adds a problem line per column and kind of problem found."""
        for name, column in self.columns.items():
            for kind, (where, value, count) in column.bad.items():
                shown = f": {value!r}" if value else ""
                others = f" ({count:,} rows like it)" if count > 1 else ""
                self._problems.add(
                    f"{kind}{shown}{others}",
                    where.file,
                    where.row,
                    name,
                )
            self._report_type(name, column)
        if self.future is not None:
            where, value, count = self.future
            others = f" ({count:,} rows like it)" if count > 1 else ""
            self._problems.add(
                f"{value} ({_time_text(value)}) is in the future: later than "
                f"the time of the run, {_time_text(self._now)}, plus "
                f"{self._config.max_clock_skew_seconds} s of clock skew"
                + others,
                where.file,
                where.row,
                self._config.time_column,
            )

    def _report_type(self, name: str, column: _Column) -> None:
        if not column.all_numeric or column.example is None:
            return
        kind = column.feature.type
        if kind == schema_pb2.BYTES:
            problem = (
                "every value is a number (e.g. "
                f"{column.example_value!r}): ExampleGen would read the "
                "column as numbers, the schema says BYTES (text)"
            )
        elif kind == schema_pb2.FLOAT:
            problem = (
                "every value is a whole number (e.g. "
                f"{column.example_value!r}): ExampleGen would read the "
                "column as INT, the schema says FLOAT; write the values "
                "with a decimal point"
            )
        else:
            return
        self._problems.add(
            problem, column.example.file, column.example.row, name
        )


def _check_duplicates(
    checker: _FileChecker,
    files: Sequence[str],
    config: CheckConfig,
    problems: _Problems,
) -> None:
    """Reports rows that repeat an earlier row's ids."""
    if not checker.hashes:
        return
    hashes = np.concatenate(checker.hashes)
    file_of = np.concatenate(
        [np.full(len(rows), i) for i, rows in checker.places]
    )
    row_of = np.concatenate([rows for _, rows in checker.places])
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeats = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    if not repeats.size:
        return
    # The first repeat in file order, and the row it repeats.
    later = order[repeats]
    first_repeat = repeats[np.argmin(later)]
    start = first_repeat
    while start > 0 and ordered[start - 1] == ordered[first_repeat]:
        start -= 1
    original, copy = order[start], order[first_repeat]
    path = files[file_of[copy]]
    fields = ", ".join(config.id_columns)
    values = _row_text(path, int(row_of[copy]))
    header = _header(path) or []
    shown = tuple(
        values[header.index(name)] if name in header else "?"
        for name in config.id_columns
    )
    where = (
        f"row {int(row_of[original])}"
        if file_of[original] == file_of[copy]
        else f"row {int(row_of[original])} of {files[file_of[original]]}"
    )
    share = repeats.size / len(hashes)
    text = (
        f"repeats the ({fields}) pair {shown} of {where}; "
        f"{repeats.size:,} of {len(hashes):,} rows ({share:.2%}) repeat a "
        "pair"
    )
    if share > config.max_duplicate_fraction:
        problems.add(
            text
            + f", more than the {config.max_duplicate_fraction:.0%} allowed: "
            "a snapshot holds each pair once",
            path,
            int(row_of[copy]),
            fields,
        )
    else:
        logging.warning(
            "span %d, file %s, row %d, field %s: %s; the newest row of "
            "each pair is kept",
            problems.span,
            path,
            int(row_of[copy]),
            fields,
            text,
        )


def _check_previous(
    checker: _FileChecker,
    previous: SpanFacts | None,
    config: CheckConfig,
    problems: _Problems,
) -> None:
    if previous is None or not checker.rows:
        return
    if (
        previous.newest is not None
        and checker.newest is not None
        and checker.newest < previous.newest
    ):
        where = checker.newest_at
        before = previous.newest_at
        problems.add(
            f"the newest timestamp, {checker.newest} "
            f"({_time_text(checker.newest)}), is older than span "
            f"{previous.span}'s newest, {previous.newest} "
            f"({_time_text(previous.newest)}, file {before.file}, row "
            f"{before.row}): the snapshot goes back in time",
            where.file,
            where.row,
            config.time_column,
        )
    limit = config.max_growth
    if limit and previous.rows and checker.rows > limit * previous.rows:
        problems.add(
            f"anomaly: {checker.rows:,} rows, "
            f"{checker.rows / previous.rows:.1f} times span "
            f"{previous.span}'s {previous.rows:,} (at most {limit:g} times "
            "is expected); if the growth is real, raise the limit "
            "(PipelineConfig.max_snapshot_growth)"
        )


def check_span(
    span: int,
    files: Sequence[str],
    schema: schema_pb2.Schema,
    config: CheckConfig | None = None,
    now: float | None = None,
    previous: SpanFacts | None = None,
) -> SpanFacts:
    """Checks the CSV files of one span (see the module doc).

    Args:
      span: the span number, for the messages.
      files: the span's CSV files.
      schema: the curated schema the rows must match.
      config: the checks beyond the schema; defaults when None.
      now: the time of the check, in seconds since the epoch; the clock's
        when None.
      previous: what is known of the span before, if there is one.

    Returns:
      The span's row count and newest timestamp.

    Raises:
      SnapshotError: listing up to 20 problems, each with the span, the
        file, the row and the field where it applies.
    """
    config = config or CheckConfig()
    now = time.time() if now is None else now
    problems = _Problems(span)
    files = list(files)
    if not files:
        problems.add("no files")
        problems.raise_if_any(files)
    checker = _FileChecker(schema, config, now, problems)
    for index, path in enumerate(files):
        checker.check_file(index, path)
    checker.report()
    if not checker.rows and not problems.lines:
        problems.add(
            "no rows: the files hold a header only (" + ", ".join(files) + ")"
        )
    _check_duplicates(checker, files, config, problems)
    _check_previous(checker, previous, config, problems)
    problems.raise_if_any(files)
    logging.info(
        "Span %d: %d rows in %d file(s) passed the snapshot checks.",
        span,
        checker.rows,
        len(files),
    )
    return SpanFacts(span, checker.rows, checker.newest, checker.newest_at)


def span_facts(span: int, files: Sequence[str], time_column: str) -> SpanFacts:
    """The row count and newest timestamp of a span that ran before.

    Raises:
      ValueError: the files cannot be read or have no such column.
    """
    rows = 0
    newest, newest_at = None, None
    for path in files:
        with _open(path) as f:
            frame = pd.read_csv(f, usecols=[time_column], dtype=str)
        times = pd.to_numeric(frame[time_column], errors="coerce")
        rows += len(times)
        if times.notna().any():
            position = int(np.nanargmax(times.to_numpy(dtype=np.float64)))
            value = int(times.iloc[position])
            if newest is None or value > newest:
                newest, newest_at = value, Where(path, position + 2)
    return SpanFacts(span, rows, newest, newest_at)


def previous_span(
    input_base: str, pattern: str, span: int
) -> tuple[int, list[str]] | None:
    """The newest span before `span` under `input_base`, and its files.

    Args:
      input_base: the data root.
      pattern: the input pattern with `{SPAN}`, e.g. "span-{SPAN}/*.csv".
      span: the span being checked.
    """
    if "{SPAN}" not in pattern:
        return None
    found: dict[int, list[str]] = {}
    prefix, suffix = pattern.split("{SPAN}", 1)
    wanted = re.compile(
        re.escape(os.path.join(input_base, prefix))
        + r"([0-9]+)"
        + re.escape(suffix).replace(r"\*", r"[^/]*")
    )
    glob = os.path.join(input_base, pattern.replace("{SPAN}", "*"))
    for path in tf.io.gfile.glob(glob):
        match = wanted.fullmatch(path)
        if match and int(match.group(1)) < span:
            found.setdefault(int(match.group(1)), []).append(path)
    if not found:
        return None
    newest = max(found)
    return newest, sorted(found[newest])

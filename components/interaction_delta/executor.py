"""The Beam executor of InteractionDelta.

The new snapshot's examples are read file by file, decoded in batches into
columns and cut into shards of users (a hash of the user id). Each shard is
diffed against the same shard of the previous pair index, so the work
spreads over Beam workers and no worker holds more than one shard of either
snapshot. Per shard the executor writes the new index shard and emits the
added, removed, modified and unchanged rows; a last step adds up the
counts, writes the summary and the item catalogue, and picks the replay
sample of unchanged pairs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils
from tfx_bsl.coders import example_coder

from components.artifacts import span_of
from components.interaction_delta import diff
from models import features
from pipeline.snapshots import COLUMNS, DTYPES, ID_COLUMNS

__all__ = [
    "DELTA_SPLITS",
    "HOLDOUT_SPLIT",
    "DeltaInputError",
    "Executor",
    "decode_examples",
    "describe_summary",
    "empty_rows",
    "encode_examples",
    "read_index",
]

DELTA_SPLITS = ("added", "removed", "modified", "released", "replay")
HOLDOUT_SPLIT = "eval"
HELD_OUT = features.HELD_OUT
USER_COHORT = features.USER_COHORT
ITEM_COHORT = features.ITEM_COHORT
SUMMARY_FILE = "summary.json"
# Where `models.trainer` writes what a model was trained on, in the model.
_MODEL_SUMMARY = os.path.join("assets.extra", "training_summary.json")
CATALOGUE_FILE = "catalogue.csv"
INDEX_FILE = "index.json"
_READ_BATCH = 65_536


def _snapshot_schema() -> bytes:
    schema = schema_pb2.Schema()
    kinds = {
        "object": schema_pb2.BYTES,
        "float64": schema_pb2.FLOAT,
        "int64": schema_pb2.INT,
    }
    for name in COLUMNS:
        schema.feature.add(name=name, type=kinds[DTYPES[name]])
    return schema.SerializeToString()


_SCHEMA = _snapshot_schema()


class DeltaInputError(ValueError):
    """An example of the new snapshot lacks a field or has the wrong type."""


def _shard_path(index_dir: str, shard: int, num_shards: int) -> str:
    return os.path.join(
        index_dir, f"shard-{shard:05d}-of-{num_shards:05d}.parquet"
    )


def read_index(index_dir: str) -> dict[str, Any]:
    """The `index.json` of a pair index: span, num_shards, previous_uri.

    A published index (`PublishedPairIndex`) also has `index_uri`, the
    folder of its shards.
    """
    with tf.io.gfile.GFile(os.path.join(index_dir, INDEX_FILE)) as f:
        return json.load(f)


def read_index_shard(
    index_dir: str, shard: int, num_shards: int
) -> pd.DataFrame:
    """The pairs of one shard of users, whatever shard count `index_dir` has.

    Args:
      index_dir: a pair index.
      shard: the shard wanted, in a layout of `num_shards` shards.
      num_shards: the shard count of the reader's layout.
    """
    info = read_index(index_dir)
    stored = int(info["num_shards"])
    index_dir = info.get("index_uri") or index_dir
    wanted = [shard] if stored == num_shards else range(stored)
    parts = []
    for part in wanted:
        with tf.io.gfile.GFile(_shard_path(index_dir, part, stored), "rb") as f:
            parts.append(pq.read_table(pa.BufferReader(f.read())).to_pandas())
    frame = pd.concat(parts, ignore_index=True)
    if stored != num_shards:
        frame = frame[diff.shard_of(frame["user_id"], num_shards) == shard]
    return frame.reset_index(drop=True)


def _column(
    batch: pa.RecordBatch, name: str, path: str, first_record: int
) -> np.ndarray:
    """One feature of a batch decoded with the snapshot schema, flattened.

    Every feature of a snapshot example holds exactly one value, and ids
    are not empty.
    """
    where = f"{path}: feature {name!r}"
    values = batch.column(name)
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy()
    bad = np.flatnonzero(lengths != 1)
    if bad.size:
        problem = "is missing" if lengths[bad[0]] == 0 else "has several values"
        raise DeltaInputError(
            f"{where} {problem} in record {first_record + int(bad[0])} "
            f"({bad.size} records like it)."
        )
    flat = values.flatten()
    if DTYPES[name] != "object":
        return flat.to_numpy().astype(DTYPES[name])
    array = flat.cast(pa.large_string()).to_numpy(zero_copy_only=False)
    if name in ID_COLUMNS:
        empty = np.flatnonzero(array == "")
        if empty.size:
            raise DeltaInputError(
                f"{where} is empty in record {first_record + int(empty[0])}."
            )
    return array


def empty_rows() -> pd.DataFrame:
    """A frame with the snapshot's columns and no rows."""
    return diff.empty_snapshot()


def _decodes(record: bytes) -> bool:
    try:
        example_coder.ExamplesToRecordBatchDecoder(_SCHEMA).DecodeBatch(
            [record]
        )
    except RuntimeError:
        return False
    return True


def decode_examples(
    records: list[bytes], path: str, first_record: int
) -> pd.DataFrame:
    """Serialized snapshot examples as a frame with the snapshot's columns.

    Raises:
      DeltaInputError: naming the file, the record and the feature, when a
        feature is missing, repeated, empty (ids) or of the wrong type.
    """
    decoder = example_coder.ExamplesToRecordBatchDecoder(_SCHEMA)
    try:
        batch = decoder.DecodeBatch(records)
    except RuntimeError as error:
        # The batch decoder says which feature, not which record; and it
        # is unusable after an error, so each record gets a fresh one.
        row = next(r for r in range(len(records)) if not _decodes(records[r]))
        found = re.search(r'feature "([^"]+)"', str(error))
        name = found.group(1) if found else "?"
        raise DeltaInputError(
            f"{path}: feature {name!r} has the wrong type in record "
            f"{first_record + row}: {error}"
        ) from None
    return pd.DataFrame(
        {name: _column(batch, name, path, first_record) for name in COLUMNS}
    )


def _read_file(path: str) -> Iterator[pd.DataFrame]:
    dataset = tf.data.TFRecordDataset(
        path, compression_type="GZIP" if path.endswith(".gz") else ""
    ).batch(_READ_BATCH)
    first = 0
    for records in dataset.as_numpy_iterator():
        yield decode_examples(list(records), path, first)
        first += len(records)


class _ReadAndShard(beam.DoFn):
    """A (file of examples, held out?) -> (shard, rows of that shard)."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def process(
        self, element: tuple[str, bool]
    ) -> Iterator[tuple[int, pd.DataFrame]]:
        path, held_out = element
        for frame in _read_file(path):
            frame[HELD_OUT] = held_out
            shards = diff.shard_of(
                frame["user_id"].to_numpy(), self._num_shards
            )
            for shard, rows in frame.groupby(shards, sort=False):
                yield int(shard), rows


class _DiffShard(beam.DoFn):
    """Diffs one shard, writes its index shard, emits rows and counts."""

    def __init__(
        self,
        previous_dir: str | None,
        index_dir: str,
        num_shards: int,
        half_life_seconds: float,
    ):
        self._previous_dir = previous_dir
        self._index_dir = index_dir
        self._num_shards = num_shards
        self._half_life = half_life_seconds

    def process(
        self, element: tuple[int, Iterable[pd.DataFrame | None]]
    ) -> Iterator[Any]:
        shard, pieces = element
        current = pd.concat(
            [diff.empty_snapshot().assign(**{HELD_OUT: False})]
            + [x for x in pieces if x is not None],
            ignore_index=True,
        ).astype({**DTYPES, HELD_OUT: bool})
        if self._previous_dir:
            previous = read_index_shard(
                self._previous_dir, shard, self._num_shards
            ).astype(DTYPES)
        else:
            previous = diff.empty_snapshot()
        delta = diff.diff_shard(previous, current)

        path = _shard_path(self._index_dir, shard, self._num_shards)
        # Through a buffer: pyarrow cannot write to a GFile directly.
        buffer = pa.BufferOutputStream()
        # The held-out flag travels: a pair held out now and trained on
        # later is `released` then.
        snapshot = delta.current[list(COLUMNS) + [HELD_OUT]]
        pq.write_table(
            pa.Table.from_pandas(snapshot, preserve_index=False), buffer
        )
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buffer.getvalue().to_pybytes())

        for name in ("added", "removed", "modified", "released"):
            rows = getattr(delta, name)
            if len(rows):
                yield beam.pvalue.TaggedOutput(name, rows)
        # Held-out pairs are never replayed: they are for evaluation.
        # Released pairs are trained on in full, not sampled.
        unchanged = delta.unchanged.drop(delta.released.index)
        replayable = unchanged[~unchanged[HELD_OUT].to_numpy()]
        fractions = diff.pair_fraction(replayable)
        if len(replayable):
            yield beam.pvalue.TaggedOutput("unchanged", (fractions, replayable))

        holdout = delta.current[delta.current[HELD_OUT].to_numpy()]
        returning = holdout["user_id"].isin(previous["user_id"]).to_numpy()
        if len(holdout):
            yield beam.pvalue.TaggedOutput(
                "holdout",
                holdout.assign(
                    **{USER_COHORT: np.where(returning, "returning", "new")}
                ),
            )

        items = delta.current.groupby("item_id")["timestamp"]
        newest = int(delta.current["timestamp"].max()) if len(current) else 0
        weights = np.exp2(
            (delta.current["timestamp"].to_numpy() - newest) / self._half_life
        )
        changes, counts = np.unique(delta.rating_changes, return_counts=True)
        yield {
            "rows": len(current),
            "duplicates": delta.duplicates,
            "added": len(delta.added),
            "removed": len(delta.removed),
            "modified": len(delta.modified),
            "unchanged": len(delta.unchanged),
            "released": len(delta.released),
            "held_out_added": int(delta.added[HELD_OUT].sum()),
            "held_out_modified": int(delta.modified[HELD_OUT].sum()),
            "users": int(delta.current["user_id"].nunique()),
            "users_new": delta.users_new,
            "users_vanished": delta.users_vanished,
            "rating_changes": dict(
                zip(changes.tolist(), counts.tolist(), strict=True)
            ),
            "unchanged_fractions": fractions,
            "newest": newest,
            "items": pd.DataFrame(
                {
                    "pairs": items.size(),
                    "last_timestamp": items.max(),
                    "weight": pd.Series(weights)
                    .groupby(delta.current["item_id"].to_numpy())
                    .sum(),
                }
            ),
            "previous_items": previous["item_id"].unique(),
            "holdout_returning": int(returning.sum()),
            "holdout_items": holdout["item_id"].to_numpy(),
        }


def _summarize(
    shards: list[dict[str, Any]],
    span: int,
    previous_span: int | None,
    replay_ratio: float,
    half_life_seconds: float,
) -> tuple[dict[str, Any], pd.DataFrame, float]:
    """Adds up the shards: the summary, the catalogue, the replay cutoff."""
    total = {
        key: sum(int(s[key]) for s in shards)
        for key in (
            "rows",
            "duplicates",
            "added",
            "removed",
            "modified",
            "unchanged",
            "released",
            "users",
            "users_new",
            "users_vanished",
            "held_out_added",
            "held_out_modified",
        )
    }
    trainable = (
        total["added"]
        - total["held_out_added"]
        + total["modified"]
        - total["held_out_modified"]
        + total["released"]
    )
    newest = max((s["newest"] for s in shards if s["rows"]), default=0)
    frames = []
    for s in shards:
        if len(s["items"]):
            part = s["items"].copy()
            part["weight"] *= np.exp2(
                (s["newest"] - newest) / half_life_seconds
            )
            frames.append(part)
    if frames:
        items = (
            pd.concat(frames)
            .groupby(level=0)
            .agg(
                pairs=("pairs", "sum"),
                last_timestamp=("last_timestamp", "max"),
                popularity=("weight", "sum"),
            )
        )
    else:
        items = pd.DataFrame(
            {"pairs": [], "last_timestamp": [], "popularity": []}
        )
    items.index.name = "item_id"
    catalogue = items.reset_index().sort_values(
        ["popularity", "item_id"], ascending=[False, True], kind="mergesort"
    )
    current_items = set(catalogue["item_id"])
    previous_items = set(known_items(shards).tolist())
    holdout_items = np.concatenate(
        [s["holdout_items"] for s in shards] + [np.empty(0, object)]
    )
    # A hash lookup: np.isin sorts object arrays with Python comparisons,
    # which took half a minute on a million-pair snapshot.
    holdout_known = int(
        pd.Series(holdout_items, dtype=object).isin(previous_items).sum()
    )
    holdout_returning = sum(s["holdout_returning"] for s in shards)

    rating_changes: dict[float, int] = {}
    for s in shards:
        for change, count in s["rating_changes"].items():
            rating_changes[change] = rating_changes.get(change, 0) + count

    fractions = np.sort(
        np.concatenate(
            [np.asarray(s["unchanged_fractions"]) for s in shards]
            + [np.empty(0)]
        )
    )
    target = min(
        len(fractions),
        int(round(replay_ratio * trainable)),
    )
    cutoff = float(fractions[target - 1]) if target else -1.0
    summary = {
        "span": span,
        "previous_span": previous_span,
        "rows_read": total["rows"],
        "duplicates_dropped": total["duplicates"],
        "pairs": {
            "added": total["added"],
            "removed": total["removed"],
            "modified": total["modified"],
            "unchanged": total["unchanged"],
            "released": total["released"],
            "current": total["rows"] - total["duplicates"],
        },
        "users": {
            "current": total["users"],
            "new": total["users_new"],
            "vanished": total["users_vanished"],
        },
        "items": {
            "current": len(current_items),
            "new": len(current_items - previous_items),
            "vanished": len(previous_items - current_items),
        },
        "rating_changes": {
            f"{change:+.1f}": count
            for change, count in sorted(rating_changes.items())
        },
        "held_out": {
            "added": total["held_out_added"],
            "modified": total["held_out_modified"],
        },
        "holdout": {
            "pairs": len(holdout_items),
            "users": {
                "new": len(holdout_items) - holdout_returning,
                "returning": holdout_returning,
            },
            "items": {
                "new": len(holdout_items) - holdout_known,
                "known": holdout_known,
            },
        },
        "replay": {
            "ratio": replay_ratio,
            "pairs": int(np.count_nonzero(fractions <= cutoff)),
        },
    }
    return summary, catalogue, cutoff


def known_items(shards: list[dict[str, Any]]) -> np.ndarray:
    """The distinct items of the previous snapshot, from the shards' stats."""
    return np.unique(
        np.concatenate(
            [np.asarray(s["previous_items"], object) for s in shards]
            + [np.empty(0, object)]
        ).astype(str)
    )


def _with_item_cohort(
    rows: pd.DataFrame, previous_items: np.ndarray
) -> pd.DataFrame:
    known = rows["item_id"].isin(previous_items).to_numpy()
    return rows.assign(**{ITEM_COHORT: np.where(known, "known", "new")})


def _write_summary(
    shards: list[dict[str, Any]],
    summary_dir: str,
    catalogue_dir: str,
    **kwargs: Any,
) -> float:
    summary, catalogue, cutoff = _summarize(shards, **kwargs)
    with tf.io.gfile.GFile(os.path.join(summary_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    with tf.io.gfile.GFile(
        os.path.join(catalogue_dir, CATALOGUE_FILE), "w"
    ) as f:
        catalogue.to_csv(f, index=False)
    return cutoff


def _sample_replay(
    element: tuple[np.ndarray, pd.DataFrame], cutoff: float
) -> Iterator[pd.DataFrame]:
    fractions, rows = element
    chosen = rows[fractions <= cutoff]
    if len(chosen):
        yield chosen


def encode_examples(rows: pd.DataFrame) -> Iterator[bytes]:
    """Rows with the snapshot's columns -> serialized tf.Examples.

    The `held_out` flag and the cohort columns, when the rows have them,
    become an int feature and string features.
    """
    offsets = pa.array(np.arange(len(rows) + 1), pa.int64())
    arrays = []
    extra = [c for c in (HELD_OUT, USER_COHORT, ITEM_COHORT) if c in rows]
    names = list(COLUMNS) + extra
    for name in names:
        values = rows[name].to_numpy()
        if values.dtype == object:
            flat = pa.array(values.tolist(), pa.large_binary())
        elif values.dtype.kind == "f":
            flat = pa.array(values.astype(np.float32))
        else:
            flat = pa.array(values.astype(np.int64))
        arrays.append(pa.LargeListArray.from_arrays(offsets, flat))
    batch = pa.RecordBatch.from_arrays(arrays, names)
    yield from example_coder.RecordBatchToExamples(batch)


def _previous_index(
    candidates: list[Any], span: int, base_span: int | None = None
) -> tuple[str | None, int | None]:
    """The pair index to diff against, and its span.

    The resolver hands over the newest index of the pipeline; when that is
    this span's own (a rerun) or a later one (a backfill), the chain of
    previous indexes leads back to the newest one before `span`. With the
    span of the model in force, the chain leads on back to that span's
    index, if the chain has one; otherwise the newest before `span` it is.
    """
    uri = candidates[0].uri if candidates else None
    newest = None
    while uri:
        info = read_index(uri)
        found = int(info["span"])
        if found < span:
            newest = newest or (uri, found)
            if base_span is None or found <= base_span:
                return (uri, found) if found == base_span else newest
        uri = info.get("previous_uri") or None
    return newest or (None, None)


def _model_span(models: list[Any]) -> int | None:
    """The span the model in force was trained on, when it says."""
    if not models:
        return None
    path = os.path.join(
        path_utils.serving_model_path(models[0].uri), _MODEL_SUMMARY
    )
    try:
        with tf.io.gfile.GFile(path) as f:
            return int(json.load(f)["span"])
    except (tf.errors.OpError, ValueError, KeyError, TypeError) as error:
        logging.warning(
            "The base model at %s does not say its span (%s): diffing "
            "against the newest earlier snapshot.",
            models[0].uri,
            error,
        )
        return None


def describe_summary(summary: dict[str, Any]) -> str:
    """The summary in three lines, for logs and the command line."""
    pairs, users, items = summary["pairs"], summary["users"], summary["items"]
    since = summary["previous_span"]
    changes = ", ".join(
        f"{k}: {v}" for k, v in summary["rating_changes"].items()
    )
    return (
        f"pairs +{pairs['added']} -{pairs['removed']} ~{pairs['modified']} "
        f"={pairs['unchanged']} (of {pairs['current']}, "
        f"{summary['duplicates_dropped']} duplicate rows dropped) since "
        f"{'no snapshot' if since is None else f'span {since}'}\n"
        f"users {users['current']} (+{users['new']} -{users['vanished']}), "
        f"items {items['current']} (+{items['new']} -{items['vanished']}), "
        f"replay sample {summary['replay']['pairs']}\n"
        f"rating changes: {changes or 'none'}"
    )


class Executor(base_beam_executor.BaseBeamExecutor):
    """Computes the delta, the summary, the catalogue and the new index."""

    def Do(  # noqa: N802 - the TFX executor interface.
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        delta = artifact_utils.get_single_instance(output_dict["delta"])
        summary = artifact_utils.get_single_instance(output_dict["summary"])
        catalogue = artifact_utils.get_single_instance(output_dict["catalogue"])
        index = artifact_utils.get_single_instance(output_dict["index"])
        holdout = artifact_utils.get_single_instance(output_dict["holdout"])
        num_shards = int(exec_properties["num_shards"])
        replay_ratio = float(exec_properties["replay_ratio"])
        if not replay_ratio >= 0:  # Also a runtime parameter's value.
            raise ValueError(f"replay_ratio must be >= 0, got {replay_ratio}.")
        half_life = float(exec_properties["popularity_half_life_seconds"])
        span = span_of(examples)

        held_out_splits = set(
            json.loads(exec_properties.get("held_out_splits") or "[]")
        )
        files = []
        for split in artifact_utils.decode_split_names(examples.split_names):
            split_uri = artifact_utils.get_split_uri([examples], split)
            files.extend(
                (path, split in held_out_splits)
                for path in sorted(
                    tf.io.gfile.glob(os.path.join(split_uri, "*"))
                )
            )
        previous_dir, previous_span = _previous_index(
            input_dict.get("previous_index", []),
            span,
            _model_span(input_dict.get("base_model", [])),
        )
        logging.info(
            "Diffing span %d (%d files) against %s",
            span,
            len(files),
            f"span {previous_span} at {previous_dir}"
            if previous_dir
            else "nothing: every pair is added",
        )

        delta.span = span
        delta.set_int_custom_property("span", span)
        delta.set_int_custom_property(
            "previous_span", -1 if previous_span is None else previous_span
        )
        delta.split_names = artifact_utils.encode_split_names(
            list(DELTA_SPLITS)
        )
        holdout.span = span
        holdout.set_int_custom_property("span", span)
        for artifact in (delta, holdout):
            artifact.set_string_custom_property(
                "payload_format", "FORMAT_TF_EXAMPLE"
            )
        holdout.split_names = artifact_utils.encode_split_names([HOLDOUT_SPLIT])
        for directory in [
            index.uri,
            summary.uri,
            catalogue.uri,
            artifact_utils.get_split_uri([holdout], HOLDOUT_SPLIT),
        ] + [artifact_utils.get_split_uri([delta], s) for s in DELTA_SPLITS]:
            tf.io.gfile.makedirs(directory)

        with self._make_beam_pipeline() as p:
            # Every shard gets a (possibly empty) group, so that a shard whose
            # users all left still reports its removed pairs.
            shards = p | "ListShards" >> beam.Create(
                [(s, None) for s in range(num_shards)]
            )
            pieces = (
                p
                | "ListFiles" >> beam.Create(files)
                | "ReadAndShard" >> beam.ParDo(_ReadAndShard(num_shards))
            )
            results = (
                (shards, pieces)
                | "Flatten" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "DiffShards"
                >> beam.ParDo(
                    _DiffShard(previous_dir, index.uri, num_shards, half_life)
                ).with_outputs(
                    "added",
                    "removed",
                    "modified",
                    "released",
                    "unchanged",
                    "holdout",
                    main="stats",
                )
            )
            stats = results.stats | "CollectStats" >> beam.combiners.ToList()
            cutoff = stats | "WriteSummary" >> beam.Map(
                _write_summary,
                summary_dir=summary.uri,
                catalogue_dir=catalogue.uri,
                span=span,
                previous_span=previous_span,
                replay_ratio=replay_ratio,
                half_life_seconds=half_life,
            )
            replay = results.unchanged | "SampleReplay" >> beam.FlatMap(
                _sample_replay, cutoff=beam.pvalue.AsSingleton(cutoff)
            )
            previous_items = stats | "KnownItems" >> beam.Map(known_items)
            evaluation = results.holdout | "ItemCohorts" >> beam.Map(
                _with_item_cohort, beam.pvalue.AsSingleton(previous_items)
            )
            outputs = {
                (delta, name): getattr(results, name)
                for name in ("added", "removed", "modified", "released")
            }
            outputs[delta, "replay"] = replay
            outputs[holdout, HOLDOUT_SPLIT] = evaluation
            for (artifact, name), rows in outputs.items():
                _ = (
                    rows
                    | f"Encode[{name}]" >> beam.FlatMap(encode_examples)
                    | f"Write[{name}]"
                    >> beam.io.WriteToTFRecord(
                        os.path.join(
                            artifact_utils.get_split_uri([artifact], name),
                            "data_tfrecord",
                        ),
                        file_name_suffix=".gz",
                    )
                )

        with tf.io.gfile.GFile(os.path.join(index.uri, INDEX_FILE), "w") as f:
            json.dump(
                {
                    "span": span,
                    "num_shards": num_shards,
                    "previous_uri": previous_dir or "",
                },
                f,
            )
        with tf.io.gfile.GFile(os.path.join(summary.uri, SUMMARY_FILE)) as f:
            result = json.load(f)
        pairs = result["pairs"]
        index.set_int_custom_property("span", span)
        index.set_int_custom_property("pairs", pairs["current"])
        catalogue.set_int_custom_property("items", result["items"]["current"])
        summary.set_int_custom_property("span", span)
        summary.set_int_custom_property(
            "changed_pairs",
            pairs["added"] + pairs["removed"] + pairs["modified"],
        )
        for key in ("added", "removed", "modified", "unchanged"):
            summary.set_int_custom_property(f"pairs_{key}", pairs[key])
        logging.info("Delta of span %d:\n%s", span, describe_summary(result))

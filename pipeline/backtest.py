"""Backtests: replay a history through the local pipeline under a policy.

A backtest cuts an interaction history into spans (span 1 the initial
history, then `spans` more), runs the real local pipeline span after span
under a retraining policy, and scores the model in force after span t on
what happens in span t + 1:

- `warm`: the pipeline as it runs in production, warm-starting every span
  from the last pushed model;
- `full`: the pipeline with a full retrain from scratch at every span;
- `stale`: the pipeline once, on span 1; that model serves ever after;
- `popularity`: no model: each user gets the active items of the newest
  span, most interactions first (the reference a model must beat).

Scoring. The held-out interactions of span t + 1 are the pairs its
snapshot has and span t's lacks. Each user's list is the top 100 of the
model's catalogue (as served: `score_catalogue` of the pushed SavedModel),
leaving out the items that user already has in snapshot t. Recall@10/50/100
is computed over every held-out pair and over four slices:

- `returning`: users in snapshot t; `new_users`: users not in it;
- `new_items`: items in snapshot t that snapshot t - 1 lacked, the
  launches the model of span t had to learn (empty for span 1).

Records (one per span and policy) go to `<out>/backtest.json`, and every
policy in there is drawn side by side in `<out>/report.html`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import movielens, snapshots, synthetic

__all__ = [
    "CUTOFFS",
    "FORMATS",
    "POLICIES",
    "SLICES",
    "Source",
    "merge_records",
    "popularity_ranking",
    "prepare_data",
    "recall_by_slice",
    "run_policy",
    "top_items",
]

POLICIES: tuple[str, ...] = ("warm", "full", "stale", "popularity")
FORMATS: tuple[str, ...] = ("movielens-100k", "movielens-csv", "synthetic")
CUTOFFS: tuple[int, ...] = (10, 50, 100)
SLICES: tuple[str, ...] = ("all", "returning", "new_users", "new_items")
RESULTS_FILE = "backtest.json"
SOURCE_FILE = "source.json"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a backtest's history comes from and how it is cut.

    Attributes:
      format: one of `FORMATS`.
      ratings: the ratings file or folder; unused for "synthetic".
      initial_fraction: share of the history in span 1. A synthetic
        history adds about as many pairs each simulated span, so its span
        1 is the snapshot after `history_spans()` of them.
      spans: spans after the first; each is scored on the one after it,
        so `spans + 1` snapshots are written.
      seed: seed of the synthetic history.
    """

    format: str
    ratings: str | None = None
    initial_fraction: float = 0.5
    spans: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(
                f"Unknown format {self.format!r}; expected one of {FORMATS}."
            )
        if self.format != "synthetic" and not self.ratings:
            raise ValueError(f"--format {self.format} needs --ratings.")
        if self.spans < 1:
            raise ValueError(f"spans must be >= 1, got {self.spans}.")
        if not 0 < self.initial_fraction < 1:
            raise ValueError(
                "initial_fraction must be strictly between 0 and 1, got "
                f"{self.initial_fraction}."
            )

    def history_spans(self) -> int:
        """Simulated spans that make up a synthetic history's span 1."""
        share = self.initial_fraction / (1 - self.initial_fraction)
        return max(1, round(share * self.spans))

    def describe(self) -> dict[str, Any]:
        """The fields that decide the data, as JSON values."""
        fields = dataclasses.asdict(self)
        if self.format == "synthetic":
            del fields["ratings"]
        else:
            fields["ratings"] = str(Path(self.ratings).resolve())
            del fields["seed"]
        return fields


def prepare_data(source: Source, out: Path) -> Path:
    """Writes the spans of `source` under `out/data`, once.

    A second backtest into the same `out` reuses the spans when they were
    cut from the same source the same way, so policies run into one folder
    are scored on the same data; a different source is refused.

    Returns:
      The data root, holding span-1 ... span-<spans + 1>.

    Raises:
      ValueError: `out` holds a backtest of other data.
    """
    data = out / "data"
    recorded = data / SOURCE_FILE
    wanted = source.describe()
    if recorded.is_file():
        have = json.loads(recorded.read_text())
        if have != wanted:
            raise ValueError(
                f"{out} holds a backtest of other data ({have}); this one "
                f"is of {wanted}. Use another --out."
            )
        return data
    data.mkdir(parents=True, exist_ok=True)
    if source.format == "synthetic":
        past = source.history_spans()
        frames = synthetic.generate(
            synthetic.SyntheticConfig(
                seed=source.seed, num_spans=past + source.spans
            )
        )
        # Each frame is a whole snapshot: the first `past` simulated spans
        # are all in the one that ends them.
        for span, frame in enumerate(frames[past - 1 :], start=1):
            snapshots.write_span(data, span, frame)
    else:
        movielens.write_movielens_spans(
            source.ratings,
            source.format,
            data,
            initial_fraction=source.initial_fraction,
            num_spans=source.spans,
        )
    # Written last: a folder without it is rewritten on the next try.
    recorded.write_text(json.dumps(wanted, indent=2) + "\n")
    return data


# -- scoring ---------------------------------------------------------------


def top_items(
    scores: np.ndarray,
    catalogue: Sequence[str],
    users: Sequence[str],
    seen: Mapping[str, set[str]],
    k: int = max(CUTOFFS),
) -> dict[str, list[str]]:
    """Each user's k best catalogue items, leaving out the items they have.

    Args:
      scores: [users, catalogue] scores, row i for `users[i]`.
      catalogue: the item id of each column.
      users: the user id of each row.
      seen: items each user already interacted with.
      k: the list length.

    Returns:
      user id -> item ids, best first (shorter when the catalogue is).
    """
    position = {item: i for i, item in enumerate(catalogue)}
    masked = np.array(scores, dtype=np.float64, copy=True)
    for row, user in enumerate(users):
        columns = [position[i] for i in seen.get(user, ()) if i in position]
        masked[row, columns] = -np.inf
    k = min(k, masked.shape[1])
    best = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    lists = {}
    for row, user in enumerate(users):
        ranked = best[row][np.argsort(-masked[row, best[row]], kind="stable")]
        lists[user] = [
            catalogue[c] for c in ranked if np.isfinite(masked[row, c])
        ]
    return lists


def recall_by_slice(
    lists: Mapping[str, Sequence[str]],
    held: pd.DataFrame,
    returning_users: set[str],
    new_items: set[str] | None,
) -> dict[str, dict[str, Any]]:
    """Recall@K of per-user lists on held-out pairs, overall and by slice.

    Args:
      lists: user id -> ranked item ids; a user without one hits nothing.
      held: the held-out pairs (columns user_id, item_id).
      returning_users: users known at training time.
      new_items: items launched in the training span; None when there is
        no span before it (the slice is then left empty).

    Returns:
      slice -> {"pairs": count, "recall": {K: value or None}}; None when
      the slice has no pairs.
    """
    users = held["user_id"].to_numpy()
    items = held["item_id"].to_numpy()
    rank = np.full(len(held), np.inf)
    for i, (user, item) in enumerate(zip(users, items, strict=True)):
        ranked = lists.get(user, ())
        if item in ranked:
            rank[i] = list(ranked).index(item)
    back = np.isin(users, list(returning_users))
    masks = {
        "all": np.ones(len(held), bool),
        "returning": back,
        "new_users": ~back,
        "new_items": (
            np.isin(items, list(new_items))
            if new_items is not None
            else np.zeros(len(held), bool)
        ),
    }
    result = {}
    for name, mask in masks.items():
        count = int(mask.sum())
        result[name] = {
            "pairs": count,
            "recall": {
                str(k): (float(np.mean(rank[mask] < k)) if count else None)
                for k in CUTOFFS
            },
        }
    return result


def popularity_ranking(
    snapshot: pd.DataFrame, previous: pd.DataFrame | None
) -> list[str]:
    """The items of `snapshot`, most interactions in the newest span first.

    The newest span's interactions are the snapshot's pairs newer than
    everything in `previous` (all of them for span 1). Ties go to the item
    with more interactions overall, then to the smaller id.
    """
    newest = snapshot
    if previous is not None and len(previous):
        newest = snapshot[snapshot["timestamp"] > previous["timestamp"].max()]
    recent = newest["item_id"].value_counts()
    total = snapshot["item_id"].value_counts()
    table = pd.DataFrame({"total": total})
    table["recent"] = recent.reindex(table.index).fillna(0)
    table = table.rename_axis("item_id").reset_index()
    table = table.sort_values(
        ["recent", "total", "item_id"],
        ascending=[False, False, True],
        kind="mergesort",
    )
    return table["item_id"].tolist()


def _new_pairs(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The rows of `after` whose (user, item) pair `before` lacks."""
    merged = after.merge(
        before[["user_id", "item_id"]].drop_duplicates(),
        how="left",
        indicator=True,
    )
    return after[(merged["_merge"] == "left_only").to_numpy()]


def _data_delta(
    before: pd.DataFrame | None, after: pd.DataFrame
) -> dict[str, int]:
    """What changed between two snapshots, counted with pandas."""
    if before is None:
        before = after.iloc[:0]
    keys = ["user_id", "item_id"]
    joined = after[keys + ["rating"]].merge(
        before[keys + ["rating"]], on=keys, how="outer", indicator=True
    )
    both = joined["_merge"] == "both"
    return {
        "added": int((joined["_merge"] == "left_only").sum()),
        "removed": int((joined["_merge"] == "right_only").sum()),
        "modified": int(
            (both & (joined["rating_x"] != joined["rating_y"])).sum()
        ),
        "new_users": len(set(after["user_id"]) - set(before["user_id"])),
        "new_items": len(set(after["item_id"]) - set(before["item_id"])),
        "vanished_items": len(set(before["item_id"]) - set(after["item_id"])),
    }


def _seen(snapshot: pd.DataFrame) -> dict[str, set[str]]:
    return {
        user: set(group)
        for user, group in snapshot.groupby("user_id", sort=False)["item_id"]
    }


class _ServedModel:
    """Scores the whole catalogue of a pushed SavedModel for raw users."""

    def __init__(self, model_dir: str):
        import tensorflow as tf

        from models.export import CATALOGUE_ASSET

        self._tf = tf
        self._score = tf.saved_model.load(model_dir).signatures[
            "score_catalogue"
        ]
        path = os.path.join(model_dir, "assets.extra", CATALOGUE_ASSET)
        with tf.io.gfile.GFile(path) as f:
            self.catalogue = f.read().splitlines()

    def scores(self, requests: pd.DataFrame) -> np.ndarray:
        """[users, catalogue] scores for rows of user_id, age, occupation."""
        tf = self._tf
        examples = [
            tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "user_id": _bytes(user),
                        "user_occupation": _bytes(occupation),
                        "user_age": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[int(age)])
                        ),
                    }
                )
            ).SerializeToString()
            for user, age, occupation in requests[
                ["user_id", "user_age", "user_occupation"]
            ].itertuples(index=False)
        ]
        columns = len(self.catalogue)
        chunks = [
            self._score(examples=tf.constant(examples[i : i + 512]))[
                "scores"
            ].numpy()[:, :columns]
            for i in range(0, len(examples), 512)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, columns))


def _bytes(text: str):
    import tensorflow as tf

    return tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[str(text).encode()])
    )


# -- running a policy --------------------------------------------------------


def _pipeline_record(report, served: str | None) -> dict[str, Any]:
    training = report.training or {}
    trainer = sum(
        s for node, s in report.component_seconds.items() if "Trainer" in node
    )
    train_seconds = float(training.get("seconds", 0.0))
    return {
        "ran_pipeline": True,
        "trained": report.trained,
        "mode": training.get("mode"),
        "reason": training.get("reason"),
        "train_seconds": train_seconds,
        # The first step builds the training graph, a cost each new model
        # pays once; the rest grows with the passes over the data.
        "first_step_seconds": float(training.get("first_step_seconds", 0.0)),
        "examples": int(training.get("examples", 0)),
        "epochs": int(training.get("epochs", 0)),
        "steps": int(training.get("steps", 0)),
        "user_vocabulary": report.user_vocabulary,
        "item_vocabulary": report.item_vocabulary,
        "ids_carried": dict(training.get("carried", {})),
        "ids_new": dict(training.get("new", {})),
        "blessed": report.blessed,
        "pushed": report.pushed_model is not None,
        "model": served,
        "wall_seconds": report.seconds,
        # Everything but fitting the model: the other components, and the
        # Trainer's own set-up, export and warm start.
        "overhead_seconds": max(report.seconds - train_seconds, 0.0),
        "trainer_seconds": trainer,
        "component_seconds": dict(report.component_seconds),
    }


def _idle_record(served: str | None, previous: dict | None) -> dict[str, Any]:
    """A span where nothing ran: the model in force stays."""
    return {
        "ran_pipeline": False,
        "trained": False,
        "mode": None,
        "reason": None,
        "train_seconds": 0.0,
        "first_step_seconds": 0.0,
        "examples": 0,
        "epochs": 0,
        "steps": 0,
        "user_vocabulary": (previous or {}).get("user_vocabulary"),
        "item_vocabulary": (previous or {}).get("item_vocabulary"),
        "ids_carried": {},
        "ids_new": {},
        "blessed": None,
        "pushed": False,
        "model": served,
        "wall_seconds": 0.0,
        "overhead_seconds": 0.0,
        "trainer_seconds": 0.0,
        "component_seconds": {},
    }


def check_no_earlier_run(out: Path, policy: str) -> None:
    """Refuses a policy whose folder under `out` holds an earlier run.

    Its metadata and pushed models would carry over: the first span would
    warm-start from the last model of the earlier run, trained on spans
    that come later.

    Raises:
      FileExistsError: `out/<policy>` exists and is not empty.
    """
    workdir = out / policy
    if workdir.is_dir() and any(workdir.iterdir()):
        raise FileExistsError(
            f"{workdir} holds an earlier run of the {policy} policy, whose "
            "models would seed this one; remove it or choose another --out."
        )


def run_policy(
    policy: str,
    data: Path,
    out: Path,
    printer: Callable[[str], None] = print,
    run_span: Callable | None = None,
    **config: Any,
) -> list[dict[str, Any]]:
    """Runs one policy over every span of `data` but the last, and scores it.

    Args:
      policy: one of `POLICIES`.
      data: the data root, as `prepare_data` writes it.
      out: the backtest folder; the policy's pipeline root, metadata and
        serving models go to `out/<policy>`.
      printer: gets a progress line per span and per component.
      run_span: runs one span of the pipeline; `pipeline.local.run_span`
        when None.
      **config: further `PipelineConfig` fields for every span.

    Returns:
      One record per trained span: what ran, what it cost, and how the
      model in force afterwards did on the next span (see the module doc).

    Raises:
      FileExistsError: `out/<policy>` holds an earlier run.
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown policy {policy!r}; expected {POLICIES}.")
    check_no_earlier_run(out, policy)
    from pipeline.config import PipelineConfig

    if run_span is None:
        from pipeline.local import run_span
    spans = snapshots.list_spans(data)
    if len(spans) < 2:
        raise ValueError(f"{data} needs at least two spans, has {spans}.")
    workdir = out / policy
    records: list[dict[str, Any]] = []
    served: str | None = None
    previous_snapshot = None
    for span in spans[:-1]:
        snapshot = snapshots.read_span(data, span)
        following = snapshots.read_span(data, span + 1)
        start = time.monotonic()
        if policy == "popularity" or (policy == "stale" and served):
            record = _idle_record(served, records[-1] if records else None)
            printer(
                f"[{policy}] span {span}: "
                + ("no model" if policy == "popularity" else "model of span 1")
            )
        else:
            printer(f"[{policy}] span {span}: running the pipeline")
            settings = dict(config)
            if policy == "full":
                settings["full_retrain"] = True
            report = run_span(
                PipelineConfig.local(workdir, data, span=span, **settings),
                printer=printer,
            )
            served = report.pushed_model or served
            record = _pipeline_record(report, served)
        held = _new_pairs(snapshot, following)
        requests = held.drop_duplicates("user_id", keep="last")
        users = requests["user_id"].tolist()
        seen = _seen(snapshot)
        if policy == "popularity":
            catalogue = popularity_ranking(snapshot, previous_snapshot)
            scores = np.tile(
                -np.arange(len(catalogue), dtype=np.float64), (len(users), 1)
            )
        elif served is None:
            catalogue, scores = [], np.zeros((len(users), 0))
        else:
            model = _ServedModel(served)
            catalogue, scores = model.catalogue, model.scores(requests)
        lists = (
            top_items(scores, catalogue, users, seen)
            if catalogue
            else {user: [] for user in users}
        )
        new_items = (
            None
            if previous_snapshot is None
            else set(snapshot["item_id"]) - set(previous_snapshot["item_id"])
        )
        record.update(
            policy=policy,
            span=span,
            scored_on=span + 1,
            delta=_data_delta(previous_snapshot, snapshot),
            metrics=recall_by_slice(
                lists, held, set(snapshot["user_id"]), new_items
            ),
            scoring_seconds=time.monotonic() - start - record["wall_seconds"],
        )
        records.append(record)
        printer(_span_line(record))
        previous_snapshot = snapshot
    return records


def _span_line(record: dict[str, Any]) -> str:
    metrics = record["metrics"]
    recall = metrics["all"]["recall"]["100"]
    back = metrics["returning"]["recall"]["100"]
    cost = (
        f"{record['mode']} start, {record['examples']:,} examples, "
        f"{record['train_seconds']:.1f} s training, "
        f"{record['overhead_seconds']:.1f} s other, "
        + ("pushed" if record["pushed"] else "not pushed")
        if record["ran_pipeline"]
        else "nothing trained"
    )
    return (
        f"[{record['policy']}] span {record['span']} -> "
        f"{record['scored_on']}: R@100 {_cell(recall)}, returning "
        f"{_cell(back)} ({cost})"
    )


def _cell(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def merge_records(
    path: Path, records: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Writes `records` into the results file, replacing their policies'.

    Records of other policies already in the file stay, so policies run
    one at a time into the same folder end up side by side. The file is
    replaced atomically.

    Returns:
      Every record now in the file, by policy (in `POLICIES` order), then
      span.
    """
    records = list(records)
    replaced = {r["policy"] for r in records}
    kept = []
    if path.is_file():
        kept = [
            r
            for r in json.loads(path.read_text())["records"]
            if r["policy"] not in replaced
        ]
    merged = sorted(
        kept + records,
        key=lambda r: (POLICIES.index(r["policy"]), r["span"]),
    )
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"records": merged}, indent=1) + "\n")
    os.replace(partial, path)
    return merged


def policy_means(
    records: Sequence[dict[str, Any]],
) -> dict[str, dict[str, float | None]]:
    """Each policy's mean figures over its spans after the first.

    Span 1 is a cold start under every policy that trains, so it tells
    the policies apart in nothing; it counts only when it is a policy's
    one span.

    Returns:
      For each policy, in the order the records name them: Recall@K per
      slice keyed "<slice>@<K>" ("all@100", "returning@100", ...), and
      "train_seconds", "first_step_seconds", "overhead_seconds",
      "examples" and "example_passes" (examples times epochs). A figure no
      span has is None.
    """
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["span"]):
        by_policy.setdefault(record["policy"], []).append(record)

    def mean(rows: list[dict[str, Any]], pick) -> float | None:
        values = [v for v in map(pick, rows) if v is not None]
        return float(np.mean(values)) if values else None

    picks = {
        f"{name}@{k}": (
            lambda r, name=name, k=k: r["metrics"][name]["recall"][k]
        )
        for name in SLICES
        for k in map(str, CUTOFFS)
    }
    picks.update(
        {
            key: (lambda r, key=key: r.get(key))
            for key in (
                "train_seconds",
                "first_step_seconds",
                "overhead_seconds",
                "examples",
            )
        }
    )
    picks["example_passes"] = lambda r: (
        r["examples"] * r["epochs"] if "epochs" in r else None
    )
    means = {}
    for policy, rows in by_policy.items():
        later = rows[1:] or rows
        means[policy] = {key: mean(later, pick) for key, pick in picks.items()}
    return means


def summary_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Lines of each policy's means over its spans after the first."""
    lines = [
        "Mean over the spans after the first (span 1 is a cold start):",
        f"{'policy':<11}{'R@10':>7}{'R@50':>7}{'R@100':>7}"
        f"{'return.':>9}{'new usr':>9}{'new itm':>9}"
        f"{'train s':>9}{'other s':>9}{'examples':>10}",
    ]
    for policy, means in policy_means(records).items():
        lines.append(
            f"{policy:<11}"
            + "".join(
                f"{_cell(means[f'all@{k}']):>7}" for k in ("10", "50", "100")
            )
            + "".join(
                f"{_cell(means[f'{s}@100']):>9}"
                for s in ("returning", "new_users", "new_items")
            )
            + f"{means['train_seconds'] or 0.0:9.1f}"
            + f"{means['overhead_seconds'] or 0.0:9.1f}"
            + f"{means['examples'] or 0.0:10,.0f}"
        )
    return lines

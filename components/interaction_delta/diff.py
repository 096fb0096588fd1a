"""How two snapshots differ, one shard of users at a time.

A snapshot is a table of interactions keyed by the pair (user_id, item_id).
Between a previous and a current snapshot each pair is exactly one of:

- added: only in the current snapshot;
- removed: only in the previous snapshot;
- modified: in both, with a different rating;
- unchanged: in both, with the same rating.

When a snapshot repeats a pair, the row with the newest timestamp wins
(ties go to the row that sorts last on the remaining columns, so the choice
never depends on row order). Applying the delta to the previous snapshot,
dropping the removed pairs, adding the added ones and taking the ratings of
the modified ones, gives the current snapshot's pairs and ratings. The
other columns of an unchanged pair (its timestamp, the user's age) follow
the current snapshot in the pair index, and do not make a pair modified.

Snapshots may carry a boolean `held_out` column: the pair belongs to a
split kept for evaluation and is never trained on. An unchanged pair that
was held out before and is not any more is also `released`: it was never
trained on, so it belongs in the next training set.

Everything here is plain pandas so that it can be tested on its own; the
Beam executor calls it once per shard.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from models.features import HELD_OUT
from pipeline.snapshots import COLUMNS, DTYPES

__all__ = [
    "KEY",
    "ShardDelta",
    "deduplicate",
    "diff_shard",
    "pair_fraction",
    "shard_of",
]

KEY = ["user_id", "item_id"]


def shard_of(user_ids: np.ndarray, num_shards: int) -> np.ndarray:
    """The shard of each user id: a hash that is the same in every process."""
    hashes = pd.util.hash_array(np.asarray(user_ids, dtype=object))
    return (hashes % np.uint64(num_shards)).astype(np.int64)


def pair_fraction(frame: pd.DataFrame) -> np.ndarray:
    """A number in [0, 1) per row that depends only on the row's pair.

    Sampling the rows whose number is below p keeps a fraction p of the
    pairs, and the same pairs on every run and in every shard layout.
    """
    keys = frame["user_id"].to_numpy(dtype=object) + "\x1f"
    keys = keys + frame["item_id"].to_numpy(dtype=object)
    hashes = pd.util.hash_array(keys.astype(object))
    return (hashes >> np.uint64(11)).astype(np.float64) / float(2**53)


def empty_snapshot() -> pd.DataFrame:
    """A snapshot with no rows and the snapshot's columns and dtypes."""
    return pd.DataFrame(
        {name: pd.Series(dtype=DTYPES[name]) for name in COLUMNS}
    )


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per pair, the newest; and how many rows were dropped.

    The result is sorted by pair, with a fresh index.
    """
    rest = [c for c in COLUMNS if c not in KEY and c != "timestamp"]
    order = KEY + ["timestamp"] + rest
    ordered = frame.sort_values(order, kind="mergesort")
    unique = ordered.drop_duplicates(KEY, keep="last")
    return unique.reset_index(drop=True), len(frame) - len(unique)


@dataclasses.dataclass
class ShardDelta:
    """The delta of one shard of users.

    Attributes:
      current: the current snapshot's rows, one per pair, sorted by pair.
      added: current rows whose pair the previous snapshot lacks.
      removed: previous rows whose pair the current snapshot lacks.
      modified: current rows whose pair had another rating before.
      unchanged: current rows whose pair had the same rating before.
      released: unchanged rows that were held out in the previous snapshot
        and are not in the current one.
      rating_changes: new minus old rating of the modified pairs, in their
        row order.
      duplicates: current rows dropped because their pair repeated.
      users_new: users in the current shard only.
      users_vanished: users in the previous shard only.
    """

    current: pd.DataFrame
    added: pd.DataFrame
    removed: pd.DataFrame
    modified: pd.DataFrame
    unchanged: pd.DataFrame
    released: pd.DataFrame
    rating_changes: np.ndarray
    duplicates: int
    users_new: int
    users_vanished: int


def _held_out(frame: pd.DataFrame) -> np.ndarray:
    if HELD_OUT not in frame:
        return np.zeros(len(frame), bool)
    return frame[HELD_OUT].to_numpy(bool)


def diff_shard(previous: pd.DataFrame, current: pd.DataFrame) -> ShardDelta:
    """Classifies every pair of two snapshots (or of one shard of both).

    Args:
      previous: the previous snapshot, one row per pair (as an index shard
        holds it); empty on the first run.
      current: the current snapshot, which may repeat pairs.

    Returns:
      The delta; see `ShardDelta`.
    """
    current, duplicates = deduplicate(current)
    previous_ratings = previous[KEY + ["rating"]].rename(
        columns={"rating": "_previous_rating"}
    )
    previous_ratings["_previous_held_out"] = _held_out(previous)
    # A left merge keeps the left frame's row order: both results stay
    # sorted by pair.
    matched = current.merge(
        previous_ratings, on=KEY, how="left", indicator=True
    )
    known = (matched["_merge"] == "both").to_numpy()
    changed = known & (
        matched["rating"].to_numpy() != matched["_previous_rating"].to_numpy()
    )
    released = (
        known
        & ~changed
        & matched["_previous_held_out"].eq(True).to_numpy()
        & ~_held_out(current)
    )
    gone = previous.merge(current[KEY], on=KEY, how="left", indicator=True)
    gone = (gone["_merge"] == "left_only").to_numpy()

    previous_users = set(previous["user_id"].unique())
    current_users = set(current["user_id"].unique())
    return ShardDelta(
        current=current,
        added=current[~known],
        removed=previous[gone],
        modified=current[changed],
        unchanged=current[known & ~changed],
        released=current[released],
        rating_changes=(
            matched["rating"].to_numpy()[changed]
            - matched["_previous_rating"].to_numpy()[changed]
        ),
        duplicates=duplicates,
        users_new=len(current_users - previous_users),
        users_vanished=len(previous_users - current_users),
    )

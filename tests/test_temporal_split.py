"""The time-ordered split of the ExampleGen executor."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from components.temporal_split import cut_points, split_index


def _quantiles(times: list[int], count: int = 1001) -> list[int]:
    """Exact quantiles, in the layout Beam's ApproximateQuantiles returns."""
    ordered = np.sort(np.asarray(times))
    positions = np.rint(np.linspace(0, len(ordered) - 1, count)).astype(int)
    return ordered[positions].tolist()


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.integers(0, 10**9), min_size=1, max_size=300),
    holdout=st.integers(1, 500),
)
def test_the_newest_split_is_newer_than_every_other_row(times, holdout):
    cuts = cut_points(_quantiles(times), [1000 - holdout, holdout])

    splits = np.array([split_index(t, cuts) for t in times])

    newest = np.asarray(times)[splits == 1]
    older = np.asarray(times)[splits == 0]
    if len(newest) and len(older):
        assert newest.min() > older.max()
    # Ties on the cut go to the older split; otherwise the share holds.
    assert np.count_nonzero(splits == 1) <= np.ceil(
        len(times) * holdout / 1000 + 1
    )


def test_shares_cut_distinct_times_in_order():
    times = list(range(1000))
    cuts = cut_points(_quantiles(times), [800, 150, 50])

    splits = [split_index(t, cuts) for t in times]

    assert splits == sorted(splits)
    assert np.bincount(splits).tolist() == [800, 150, 50]


def test_a_row_without_time_goes_to_the_oldest_split():
    cuts = cut_points(_quantiles([5, 6, 7, 8]), [50, 50])

    assert split_index(np.iinfo(np.int64).min, cuts) == 0


def test_no_rows_cut_nothing():
    assert cut_points([], [90, 10]).tolist() == [0]

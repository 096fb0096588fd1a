"""Tests for pipeline.synthetic: the seeded synthetic history."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import snapshots, synthetic
from pipeline.snapshots import COLUMNS, DTYPES
from pipeline.synthetic import SyntheticConfig

# pandas 1.5 calls a NumPy function that NumPy 1.25+ deprecates whenever
# these tests compare snapshots with merge() and isin(); not our code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:np.find_common_type is deprecated:DeprecationWarning:pandas"
)

CONFIG = SyntheticConfig()
PAIR = ["user_id", "item_id"]
CONSECUTIVE = [(k, k + 1) for k in range(CONFIG.num_spans - 1)]


@pytest.fixture(scope="module")
def history() -> list[pd.DataFrame]:
    return synthetic.generate(CONFIG)


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user_id"], frame["item_id"], strict=True))


def _changes(before: pd.DataFrame, after: pd.DataFrame) -> dict:
    """Compares two consecutive snapshots."""
    users_after = set(after["user_id"])
    items_after = set(after["item_id"])
    merged = before.merge(
        after, on=PAIR, how="outer", suffixes=("_0", "_1"), indicator=True
    )
    gone = merged[merged["_merge"] == "left_only"]
    kept = merged[merged["_merge"] == "both"]
    added = merged[merged["_merge"] == "right_only"]
    return {
        "gone": gone,
        "kept": kept,
        "added": added,
        # A pair vanishing while its user stays can only be a retirement.
        "retired": set(gone.loc[gone["user_id"].isin(users_after), "item_id"]),
        # A pair vanishing while its item stays can only be a departure.
        "departed": set(gone.loc[gone["item_id"].isin(items_after), "user_id"]),
        "new_users": users_after - set(before["user_id"]),
        "new_items": items_after - set(before["item_id"]),
    }


def _number(ids: pd.Series) -> pd.Series:
    return ids.str[1:].astype(int)


def _arrived_by(config: SyntheticConfig, column: str, span: int) -> int:
    """How many users or items exist by the end of ``span`` (ids 1..n)."""
    if column == "user_id":
        return config.initial_users + (span - 1) * config.new_users_per_span
    return config.initial_items + (span - 1) * config.new_items_per_span


def _newcomers(
    config: SyntheticConfig, frame: pd.DataFrame, column: str, span: int
) -> set[str]:
    """The ids in ``frame`` of users or items that arrived in ``span``."""
    numbers = _number(frame[column])
    low = _arrived_by(config, column, span - 1)
    high = _arrived_by(config, column, span)
    return set(frame.loc[(numbers > low) & (numbers <= high), column])


def test_same_seed_same_history(history) -> None:
    again = synthetic.generate(SyntheticConfig(seed=CONFIG.seed))
    assert len(again) == len(history)
    for mine, theirs in zip(history, again, strict=True):
        pd.testing.assert_frame_equal(mine, theirs)


def test_other_seed_other_history(history) -> None:
    other = synthetic.generate(SyntheticConfig(seed=CONFIG.seed + 1))
    assert len(other) == len(history)
    for mine, theirs in zip(history, other, strict=True):
        assert not mine.equals(theirs)
        assert _pairs(mine) != _pairs(theirs)


@pytest.mark.parametrize("num_spans", [1, 2, 5])
def test_one_snapshot_per_span(num_spans) -> None:
    config = SyntheticConfig(
        num_spans=num_spans, initial_users=50, initial_items=30
    )
    assert len(synthetic.generate(config)) == num_spans


def test_default_size_grows_to_a_few_ten_thousand_pairs(history) -> None:
    sizes = [len(frame) for frame in history]
    assert sizes == sorted(sizes)
    assert 20_000 <= sizes[-1] <= 30_000
    assert history[0]["user_id"].nunique() == CONFIG.initial_users
    assert history[0]["item_id"].nunique() == CONFIG.initial_items


def test_columns_dtypes_and_values(history) -> None:
    genres = set(synthetic.GENRE_NAMES[: CONFIG.num_genres])
    jobs = set(synthetic.OCCUPATIONS) | {snapshots.UNKNOWN}
    for frame in history:
        assert list(frame.columns) == list(COLUMNS)
        assert {name: str(frame[name].dtype) for name in COLUMNS} == DTYPES
        # The writer's checks pass: no nulls, no numeric ids, ranges.
        snapshots.validate_snapshot(frame)
        assert frame["user_id"].str.fullmatch(r"u[1-9][0-9]*").all()
        assert frame["item_id"].str.fullmatch(r"i[1-9][0-9]*").all()
        assert set(frame["rating"]) <= {1.0, 2.0, 3.0, 4.0, 5.0}
        split = frame["item_genres"].str.split("|")
        assert split.map(len).between(1, 3).all()
        assert set(split.explode()) <= genres
        years = frame["item_year"]
        assert ((years == 0) | years.between(1940, 2030)).all()
        ages = frame["user_age"]
        assert ((ages == 0) | ages.between(13, 80)).all()
        assert set(frame["user_occupation"]) <= jobs


def test_some_features_are_unknown(history) -> None:
    last = history[-1]
    assert (last["item_year"] == 0).any()
    assert (last["user_age"] == 0).any()
    assert (last["user_occupation"] == snapshots.UNKNOWN).any()
    # ... but only a few.
    assert (last["user_age"] == 0).mean() < 0.1


def test_no_duplicate_pairs(history) -> None:
    for frame in history:
        assert not frame.duplicated(PAIR).any()


def test_rows_are_in_written_order(history) -> None:
    for frame in history:
        pd.testing.assert_frame_equal(frame, snapshots.sort_snapshot(frame))


def test_entity_features_never_change(history) -> None:
    everything = pd.concat(history)
    per_item = everything.groupby("item_id")[["item_genres", "item_year"]]
    assert (per_item.nunique() == 1).all().all()
    per_user = everything.groupby("user_id")[["user_age", "user_occupation"]]
    assert (per_user.nunique() == 1).all().all()


def test_timestamps_stay_in_their_windows(history) -> None:
    start = CONFIG.start_timestamp
    for span, frame in enumerate(history, start=1):
        assert frame["timestamp"].min() >= start
        assert frame["timestamp"].max() < CONFIG.window(span)[1]
    first_start, first_end = CONFIG.window(1)
    assert history[0]["timestamp"].between(first_start, first_end - 1).all()


@pytest.mark.parametrize(("before", "after"), CONSECUTIVE)
def test_new_pairs_fall_in_the_new_span(history, before, after) -> None:
    change = _changes(history[before], history[after])
    start, end = CONFIG.window(after + 1)
    assert len(change["added"]) > 0
    assert change["added"]["timestamp_1"].between(start, end - 1).all()


@pytest.mark.parametrize(("before", "after"), CONSECUTIVE)
def test_new_users_and_items_arrive(history, before, after) -> None:
    span = after + 1
    frame = history[after]
    change = _changes(history[before], frame)
    start, end = CONFIG.window(span)
    for column, count, new_ids in (
        ("user_id", CONFIG.new_users_per_span, change["new_users"]),
        ("item_id", CONFIG.new_items_per_span, change["new_items"]),
    ):
        # Ids go up to the number of arrivals so far; none is reused.
        assert _number(frame[column]).max() <= _arrived_by(CONFIG, column, span)
        # Every newcomer interacts in the span it arrives in.
        newcomers = _newcomers(CONFIG, frame, column, span)
        assert len(newcomers) == count
        assert newcomers <= new_ids
        rows = frame[frame[column].isin(newcomers)]
        assert rows["timestamp"].between(start, end - 1).all()


@pytest.mark.parametrize(("before", "after"), CONSECUTIVE)
def test_new_items_are_recent_releases(history, before, after) -> None:
    frame = history[after]
    newcomers = _newcomers(CONFIG, frame, "item_id", after + 1)
    items = frame.drop_duplicates("item_id").set_index("item_id")
    fresh = items.index.isin(newcomers)
    new_years = items.loc[fresh, "item_year"]
    old_years = items.loc[~fresh, "item_year"]
    assert len(new_years) == CONFIG.new_items_per_span
    assert new_years[new_years > 0].min() >= old_years.max() - 1
    assert new_years[new_years > 0].mean() > old_years[old_years > 0].mean()


@pytest.mark.parametrize(("before", "after"), CONSECUTIVE)
def test_retired_items_vanish_for_good(history, before, after) -> None:
    change = _changes(history[before], history[after])
    retired = change["retired"]
    assert len(retired) >= 1
    # Roughly the configured share of the catalogue.
    catalogue = history[before]["item_id"].nunique()
    assert len(retired) <= 2 * CONFIG.item_retirement_rate * catalogue + 1
    for later in history[after:]:
        assert not later["item_id"].isin(retired).any()


@pytest.mark.parametrize(("before", "after"), CONSECUTIVE)
def test_departed_users_vanish_for_good(history, before, after) -> None:
    change = _changes(history[before], history[after])
    departed = change["departed"]
    assert len(departed) >= 1
    users = history[before]["user_id"].nunique()
    assert len(departed) <= 2 * CONFIG.user_departure_rate * users + 1
    for later in history[after:]:
        assert not later["user_id"].isin(departed).any()


@pytest.mark.parametrize(("before", "after"), CONSECUTIVE)
def test_pairs_only_vanish_with_their_user_or_item(
    history, before, after
) -> None:
    change = _changes(history[before], history[after])
    gone = change["gone"]
    assert len(gone) > 0
    user_left = gone["user_id"].isin(change["departed"])
    item_left = gone["item_id"].isin(change["retired"])
    user_absent = ~gone["user_id"].isin(history[after]["user_id"])
    item_absent = ~gone["item_id"].isin(history[after]["item_id"])
    assert (user_left | item_left | user_absent | item_absent).all()


@pytest.mark.parametrize(("before", "after"), CONSECUTIVE)
def test_edits_change_the_rating_and_move_the_timestamp(
    history, before, after
) -> None:
    kept = _changes(history[before], history[after])["kept"]
    edited = kept["rating_0"] != kept["rating_1"]
    moved = kept["timestamp_0"] != kept["timestamp_1"]
    # A pair that stays is either untouched or edited: new rating and
    # newer timestamp, inside the new span.
    assert (edited == moved).all()
    assert edited.sum() == round(CONFIG.rating_edit_rate * len(kept))
    start, end = CONFIG.window(after + 1)
    assert kept.loc[edited, "timestamp_1"].between(start, end - 1).all()
    assert (
        kept.loc[edited, "timestamp_1"] > kept.loc[edited, "timestamp_0"]
    ).all()
    for name in ("item_genres", "item_year", "user_age", "user_occupation"):
        assert (kept[f"{name}_0"] == kept[f"{name}_1"]).all()


def test_popularity_has_a_long_tail(history) -> None:
    for frame in history:
        counts = frame["item_id"].value_counts()
        top = counts.iloc[: len(counts) // 10].sum() / counts.sum()
        bottom = counts.iloc[len(counts) // 2 :].sum() / counts.sum()
        assert top > 0.25  # the top 10% of items
        assert bottom < 0.25  # the bottom half of items


def test_popularity_sigma_controls_the_tail() -> None:
    def top_share(sigma: float) -> float:
        config = SyntheticConfig(popularity_sigma=sigma, num_spans=1)
        counts = synthetic.generate(config)[0]["item_id"].value_counts()
        return counts.iloc[: len(counts) // 10].sum() / counts.sum()

    assert top_share(0.0) < top_share(1.5) < top_share(2.5)


def _genre_profiles(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    exploded = frame.assign(genre=frame["item_genres"].str.split("|"))
    exploded = exploded.explode("genre")
    return pd.crosstab(exploded[by], exploded["genre"], normalize="index")


def test_user_taste_is_stable_across_spans(history) -> None:
    change = _changes(history[0], history[1])
    added = change["added"].rename(columns={"item_genres_1": "item_genres"})
    early = _genre_profiles(history[0], "user_id")
    late = _genre_profiles(added, "user_id")
    users = early.index.intersection(late.index)
    genres = early.columns.union(late.columns)
    first = early.reindex(index=users, columns=genres, fill_value=0)
    second = late.reindex(index=users, columns=genres, fill_value=0)
    a, b = first.to_numpy(), second.to_numpy()

    def mean_cosine(x: np.ndarray, y: np.ndarray) -> float:
        dots = (x * y).sum(axis=1)
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        return float((dots / norms).mean())

    shuffled = b[np.random.default_rng(0).permutation(len(b))]
    assert mean_cosine(a, b) > mean_cosine(a, shuffled) + 0.05


def test_occupation_says_something_about_taste(history) -> None:
    frame = history[-1]
    frame = frame[frame["user_occupation"] != snapshots.UNKNOWN]

    def spread(labels: pd.Series) -> float:
        profiles = _genre_profiles(frame.assign(label=labels), "label")
        overall = profiles.mean(axis=0)
        return float((profiles - overall).abs().sum(axis=1).mean())

    users = frame["user_id"].drop_duplicates()
    jobs = frame.drop_duplicates("user_id").set_index("user_id")
    jobs = jobs["user_occupation"]
    rng = np.random.default_rng(0)
    shuffled = pd.Series(rng.permutation(jobs.to_numpy()), index=jobs.index)
    real = spread(frame["user_occupation"])
    fake = spread(frame["user_id"].map(shuffled))
    assert len(users) > 100
    assert real > fake


def test_write_history_round_trip(tmp_path, history) -> None:
    paths = synthetic.write_history(tmp_path, CONFIG)
    assert paths == [
        tmp_path / f"span-{span}" / "interactions.csv"
        for span in range(1, CONFIG.num_spans + 1)
    ]
    assert snapshots.list_spans(tmp_path) == [1, 2, 3]
    for span, frame in enumerate(history, start=1):
        pd.testing.assert_frame_equal(
            snapshots.read_span(tmp_path, span), frame
        )


def test_window() -> None:
    config = SyntheticConfig(start_timestamp=1000, span_seconds=10)
    assert config.window(1) == (1000, 1010)
    assert config.window(3) == (1020, 1030)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", -1),
        ("num_spans", 0),
        ("initial_users", 0),
        ("initial_items", 0),
        ("new_users_per_span", -1),
        ("new_items_per_span", -1),
        ("interactions_per_user", 0),
        ("interactions_per_user", float("nan")),
        ("item_retirement_rate", 1.0),
        ("rating_edit_rate", -0.1),
        ("user_departure_rate", 1.5),
        ("latent_dim", 0),
        ("num_genres", 0),
        ("start_timestamp", -5),
        ("span_seconds", 1),
        ("popularity_sigma", -1.0),
        ("num_spans", 2.5),
        ("initial_users", True),
        ("seed", "1"),
        ("rating_edit_rate", None),
    ],
)
def test_bad_config_is_rejected(field, value) -> None:
    with pytest.raises(ValueError, match=f"{field} must be .*{value!r}"):
        SyntheticConfig(**{field: value})


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIG.seed = 3  # type: ignore[misc]


def test_many_genres_get_generated_names() -> None:
    config = SyntheticConfig(num_genres=25, num_spans=1)
    names = set(
        synthetic.generate(config)[0]["item_genres"].str.split("|").explode()
    )
    assert names <= set(synthetic.GENRE_NAMES) | {
        f"genre-{k}" for k in range(19, 26)
    }
    assert any(name.startswith("genre-") for name in names)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_spans=st.integers(1, 4),
    initial_users=st.integers(1, 40),
    initial_items=st.integers(1, 30),
    new_users=st.integers(0, 8),
    new_items=st.integers(0, 8),
    mean=st.floats(0.2, 10),
    retire=st.floats(0, 0.6),
    edit=st.floats(0, 0.6),
    leave=st.floats(0, 0.6),
    dim=st.integers(1, 4),
    genres=st.integers(1, 5),
)
# Span 2 retires the only item: an empty snapshot.
@example(
    seed=0,
    num_spans=2,
    initial_users=1,
    initial_items=1,
    new_users=0,
    new_items=0,
    mean=1.0,
    retire=0.5625,
    edit=0.0,
    leave=0.0,
    dim=1,
    genres=1,
)
def test_invariants_hold_for_any_small_config(
    seed,
    num_spans,
    initial_users,
    initial_items,
    new_users,
    new_items,
    mean,
    retire,
    edit,
    leave,
    dim,
    genres,
) -> None:
    config = SyntheticConfig(
        seed=seed,
        num_spans=num_spans,
        initial_users=initial_users,
        initial_items=initial_items,
        new_users_per_span=new_users,
        new_items_per_span=new_items,
        interactions_per_user=mean,
        item_retirement_rate=retire,
        rating_edit_rate=edit,
        user_departure_rate=leave,
        latent_dim=dim,
        num_genres=genres,
        span_seconds=1000,
    )
    frames = synthetic.generate(config)
    assert len(frames) == num_spans
    # Every initial user interacts at least once in span 1.
    assert frames[0]["user_id"].nunique() == initial_users
    gone_users: set[str] = set()
    gone_items: set[str] = set()
    for span, frame in enumerate(frames, start=1):
        snapshots.validate_snapshot(frame)  # includes: no duplicate pairs
        assert (
            frame["timestamp"]
            .between(config.start_timestamp, config.window(span)[1] - 1)
            .all()
        )
        if span > 1:
            before = frames[span - 2]
            change = _changes(before, frame)
            start, _ = config.window(span)
            assert (change["added"]["timestamp_1"] >= start).all()
            for column in ("user_id", "item_id"):
                highest = _arrived_by(config, column, span)
                # A span can be empty: its only items were all retired.
                assert (_number(frame[column]) <= highest).all()
            gone_users |= change["departed"]
            gone_items |= change["retired"]
        # Nobody who left and nothing retired ever comes back.
        assert not frame["user_id"].isin(gone_users).any()
        assert not frame["item_id"].isin(gone_items).any()

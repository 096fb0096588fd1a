"""Seeded synthetic interaction history that changes like a real catalogue.

The generator simulates a catalogue span by span and returns one snapshot
(the full state, see ``pipeline.snapshots``) per span:

* users and items have stable latent vectors; a user picks items with
  probability proportional to ``exp(taste * <user, item>) * popularity``,
  where popularity is lognormal (a long tail) and new items get a novelty
  boost that halves every span;
* items have 1 to 3 genres drawn from their latent vector, a release year
  tied to when they arrive, and a quality bias that tracks popularity;
  users have an age and an occupation drawn from their latent vector, so
  every feature carries signal;
* every span after the first, some users leave and some items are retired
  (their pairs vanish from that snapshot on and they never come back),
  some existing ratings are edited (same pair, new rating, newer
  timestamp), and new users and items arrive and interact in that span;
* ratings are whole numbers from 1 to 5, from affinity plus biases plus
  noise; timestamps fall inside each span's window.

Everything is drawn from one ``numpy.random.Generator`` seeded by the
config, so a config always gives the same history.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import pathlib

import numpy as np
import pandas as pd

from pipeline import snapshots

__all__ = [
    "GENRE_NAMES",
    "OCCUPATIONS",
    "SyntheticConfig",
    "generate",
    "write_history",
]

GENRE_NAMES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
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
"""Genre names used in order; genres past these are named ``genre-<n>``."""

OCCUPATIONS: tuple[str, ...] = (
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
    "other",
)
"""The occupations synthetic users can have (besides ``"unknown"``)."""

# Shape of the simulated world; the config holds what callers tune.
_TASTE = 2.0  # weight of <user, item> / sqrt(dim) in the choice logit
_NOVELTY = 1.0  # choice-logit boost of an item in the span it arrives
_ACTIVITY_SIGMA = 0.7  # spread of the users' lognormal activity levels
_RATING_BASE = 2.4
_RATING_TASTE = 0.9
_USER_BIAS = 0.35
_ITEM_BIAS = 0.3
_RATING_NOISE = 0.7
_GENRE_SHARPNESS = 3.0  # how strongly genres follow the item vector
_OCCUPATION_SHARPNESS = 1.5  # how strongly occupations follow taste
_GENRE_COUNT_P = (0.45, 0.35, 0.2)  # P(an item has 1, 2, 3 genres)
_UNKNOWN_YEAR = 0.02  # fraction of items whose year is unknown
_UNKNOWN_AGE = 0.03
_UNKNOWN_OCCUPATION = 0.03
_BACK_CATALOGUE_YEARS = 12.0  # mean age of the initial items' releases
_CHUNK = 1024  # users scored at once; fixed so results do not depend on it


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """How big the synthetic history is and how fast it changes.

    Attributes:
        seed: Seed of the random generator.
        num_spans: Number of spans (snapshots) to generate.
        initial_users: Users present in span 1.
        initial_items: Items present in span 1.
        new_users_per_span: Users arriving in each later span.
        new_items_per_span: Items arriving in each later span.
        interactions_per_user: Mean new interactions of an active user per
            span (users' activity levels vary around it).
        item_retirement_rate: Fraction of the active items retired at the
            start of each later span.
        rating_edit_rate: Fraction of the existing pairs whose rating is
            edited in each later span.
        user_departure_rate: Fraction of the active users who leave at the
            start of each later span.
        latent_dim: Dimension of the latent taste vectors.
        num_genres: Number of distinct genres.
        start_timestamp: Start of span 1, in seconds since the epoch.
        span_seconds: Length of each span's time window, in seconds.
        popularity_sigma: Spread of the lognormal item popularity; larger
            makes the tail longer.
    """

    seed: int = 0
    num_spans: int = 3
    initial_users: int = 600
    initial_items: int = 300
    new_users_per_span: int = 90
    new_items_per_span: int = 30
    interactions_per_user: float = 12.0
    item_retirement_rate: float = 0.03
    rating_edit_rate: float = 0.03
    user_departure_rate: float = 0.02
    latent_dim: int = 8
    num_genres: int = 12
    start_timestamp: int = 1_600_000_000
    span_seconds: int = 7 * 24 * 3600
    popularity_sigma: float = 1.5

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                ok = isinstance(value, (int, np.integer))
                kind = "an integer"
            else:
                ok = isinstance(value, (int, float, np.number))
                kind = "a number"
            _require(self, field.name, ok and not isinstance(value, bool), kind)
        _require(self, "seed", self.seed >= 0, ">= 0")
        _require(self, "num_spans", self.num_spans >= 1, ">= 1")
        _require(self, "initial_users", self.initial_users >= 1, ">= 1")
        _require(self, "initial_items", self.initial_items >= 1, ">= 1")
        _require(
            self, "new_users_per_span", self.new_users_per_span >= 0, ">= 0"
        )
        _require(
            self, "new_items_per_span", self.new_items_per_span >= 0, ">= 0"
        )
        _require(
            self,
            "interactions_per_user",
            math.isfinite(self.interactions_per_user)
            and self.interactions_per_user > 0,
            "> 0",
        )
        for name in (
            "item_retirement_rate",
            "rating_edit_rate",
            "user_departure_rate",
        ):
            value = getattr(self, name)
            _require(self, name, 0 <= value < 1, "in [0, 1)")
        _require(self, "latent_dim", self.latent_dim >= 1, ">= 1")
        _require(self, "num_genres", self.num_genres >= 1, ">= 1")
        _require(self, "start_timestamp", self.start_timestamp >= 0, ">= 0")
        _require(self, "span_seconds", self.span_seconds >= 2, ">= 2")
        _require(
            self,
            "popularity_sigma",
            math.isfinite(self.popularity_sigma) and self.popularity_sigma >= 0,
            ">= 0",
        )

    def window(self, span: int) -> tuple[int, int]:
        """Returns the time window of a span.

        Args:
            span: The span number, from 1.

        Returns:
            ``(start, end)`` in seconds since the epoch; timestamps of the
            span satisfy ``start <= t < end``.
        """
        start = self.start_timestamp + (span - 1) * self.span_seconds
        return start, start + self.span_seconds


def _require(
    config: SyntheticConfig, name: str, ok: bool, expected: str
) -> None:
    if not ok:
        raise ValueError(
            f"SyntheticConfig.{name} must be {expected}, got "
            f"{getattr(config, name)!r}"
        )


def _genre_names(count: int) -> np.ndarray:
    names = [
        GENRE_NAMES[k] if k < len(GENRE_NAMES) else f"genre-{k + 1}"
        for k in range(count)
    ]
    return np.array(names, dtype=object)


def _year_of(timestamp: int) -> int:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.year


class _World:
    """The simulated catalogue; each ``step`` advances it by one span."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        dim = config.latent_dim
        self.scale = 1.0 / math.sqrt(dim)
        self.genre_axes = self.rng.standard_normal((config.num_genres, dim))
        self.genre_names = _genre_names(config.num_genres)
        self.occupation_axes = self.rng.standard_normal((len(OCCUPATIONS), dim))
        age_axis = self.rng.standard_normal(dim)
        self.age_axis = age_axis / np.linalg.norm(age_axis)

        self.u_vec = np.empty((0, dim))
        self.u_bias = np.empty(0)
        self.u_activity = np.empty(0)
        self.u_arrival = np.empty(0, dtype=np.int64)
        self.u_span = np.empty(0, dtype=np.int64)
        self.u_alive = np.empty(0, dtype=bool)
        self.u_age = np.empty(0, dtype=np.int64)
        self.u_occupation = np.empty(0, dtype=object)
        self.u_key = np.empty(0, dtype=object)

        self.i_vec = np.empty((0, dim))
        self.i_bias = np.empty(0)
        self.i_logpop = np.empty(0)
        self.i_arrival = np.empty(0, dtype=np.int64)
        self.i_span = np.empty(0, dtype=np.int64)
        self.i_alive = np.empty(0, dtype=bool)
        self.i_year = np.empty(0, dtype=np.int64)
        self.i_genres = np.empty(0, dtype=object)
        self.i_key = np.empty(0, dtype=object)

        self.p_user = np.empty(0, dtype=np.int64)
        self.p_item = np.empty(0, dtype=np.int64)
        self.p_rating = np.empty(0)
        self.p_time = np.empty(0, dtype=np.int64)

    # -- arrivals ---------------------------------------------------------

    def _arrivals(self, count: int, span: int) -> np.ndarray:
        start, _ = self.config.window(span)
        if span == 1:
            return np.full(count, start, dtype=np.int64)
        spread = self.config.span_seconds // 2
        offsets = np.floor(self.rng.random(count) * spread).astype(np.int64)
        return start + offsets

    def add_users(self, count: int, span: int) -> None:
        rng = self.rng
        dim = self.config.latent_dim
        vec = rng.standard_normal((count, dim))
        bias = _USER_BIAS * rng.standard_normal(count)
        sigma = _ACTIVITY_SIGMA
        activity = rng.lognormal(-0.5 * sigma * sigma, sigma, count)
        arrival = self._arrivals(count, span)

        taste_age = vec @ self.age_axis
        age = np.rint(34 + 10 * taste_age + 6 * rng.standard_normal(count))
        age = np.clip(age, 13, 80).astype(np.int64)
        age[rng.random(count) < _UNKNOWN_AGE] = 0

        affinity = (
            _OCCUPATION_SHARPNESS * self.scale * (vec @ self.occupation_axes.T)
        )
        choice = np.argmax(affinity + rng.gumbel(size=affinity.shape), 1)
        occupation = np.array(OCCUPATIONS, dtype=object)[choice]
        occupation[rng.random(count) < _UNKNOWN_OCCUPATION] = snapshots.UNKNOWN

        first = len(self.u_key) + 1
        keys = [snapshots.user_key(n) for n in range(first, first + count)]
        self.u_vec = np.concatenate([self.u_vec, vec])
        self.u_bias = np.concatenate([self.u_bias, bias])
        self.u_activity = np.concatenate([self.u_activity, activity])
        self.u_arrival = np.concatenate([self.u_arrival, arrival])
        self.u_span = np.concatenate(
            [self.u_span, np.full(count, span, dtype=np.int64)]
        )
        self.u_alive = np.concatenate([self.u_alive, np.ones(count, bool)])
        self.u_age = np.concatenate([self.u_age, age])
        self.u_occupation = np.concatenate([self.u_occupation, occupation])
        self.u_key = np.concatenate([self.u_key, np.array(keys, object)])

    def add_items(self, count: int, span: int) -> None:
        rng = self.rng
        config = self.config
        vec = rng.standard_normal((count, config.latent_dim))
        quality = rng.standard_normal(count)
        logpop = config.popularity_sigma * quality
        bias = _ITEM_BIAS * (0.6 * quality + 0.8 * rng.standard_normal(count))
        arrival = self._arrivals(count, span)

        span_year = _year_of(config.window(span)[0])
        if span == 1:
            age = np.floor(rng.exponential(_BACK_CATALOGUE_YEARS, count))
            year = span_year - np.minimum(age, 70).astype(np.int64)
        else:
            late = rng.random(count) < 0.15
            year = span_year - late.astype(np.int64)
        year[rng.random(count) < _UNKNOWN_YEAR] = 0

        genres = self._genres(vec)
        first = len(self.i_key) + 1
        keys = [snapshots.item_key(n) for n in range(first, first + count)]
        self.i_vec = np.concatenate([self.i_vec, vec])
        self.i_bias = np.concatenate([self.i_bias, bias])
        self.i_logpop = np.concatenate([self.i_logpop, logpop])
        self.i_arrival = np.concatenate([self.i_arrival, arrival])
        self.i_span = np.concatenate(
            [self.i_span, np.full(count, span, dtype=np.int64)]
        )
        self.i_alive = np.concatenate([self.i_alive, np.ones(count, bool)])
        self.i_year = np.concatenate([self.i_year, year])
        self.i_genres = np.concatenate([self.i_genres, genres])
        self.i_key = np.concatenate([self.i_key, np.array(keys, object)])

    def _genres(self, vec: np.ndarray) -> np.ndarray:
        count = len(vec)
        num_genres = self.config.num_genres
        sizes = self.rng.choice([1, 2, 3], size=count, p=_GENRE_COUNT_P)
        sizes = np.minimum(sizes, num_genres)
        affinity = _GENRE_SHARPNESS * self.scale * (vec @ self.genre_axes.T)
        noisy = affinity + self.rng.gumbel(size=affinity.shape)
        ranks = np.argsort(np.argsort(-noisy, axis=1), axis=1)
        chosen = ranks < sizes[:, None]
        names = self.genre_names
        joined = ["|".join(names[row]) for row in chosen]
        return np.array(joined, dtype=object)

    # -- ratings ----------------------------------------------------------

    def _rate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        affinity = self.scale * np.einsum(
            "ij,ij->i", self.u_vec[users], self.i_vec[items]
        )
        noise = _RATING_NOISE * self.rng.standard_normal(len(users))
        raw = (
            _RATING_BASE
            + _RATING_TASTE * affinity
            + self.u_bias[users]
            + self.i_bias[items]
            + noise
        )
        return np.clip(np.rint(raw), 1, 5)

    # -- one span ---------------------------------------------------------

    def step(self, span: int) -> None:
        config = self.config
        if span == 1:
            self.add_users(config.initial_users, 1)
            self.add_items(config.initial_items, 1)
        else:
            self._depart_and_retire()
            self._edit(span)
            self.add_users(config.new_users_per_span, span)
            self.add_items(config.new_items_per_span, span)
        self._interact(span)

    def _depart_and_retire(self) -> None:
        rng = self.rng
        config = self.config
        for alive, rate in (
            (self.u_alive, config.user_departure_rate),
            (self.i_alive, config.item_retirement_rate),
        ):
            candidates = np.flatnonzero(alive)
            count = int(round(rate * len(candidates)))
            gone = rng.choice(candidates, size=count, replace=False)
            alive[gone] = False
        keep = self.u_alive[self.p_user] & self.i_alive[self.p_item]
        self.p_user = self.p_user[keep]
        self.p_item = self.p_item[keep]
        self.p_rating = self.p_rating[keep]
        self.p_time = self.p_time[keep]

    def _edit(self, span: int) -> None:
        rng = self.rng
        total = len(self.p_user)
        count = int(round(self.config.rating_edit_rate * total))
        if count == 0:
            return
        chosen = np.sort(rng.choice(total, size=count, replace=False))
        old = self.p_rating[chosen]
        new = self._rate(self.p_user[chosen], self.p_item[chosen])
        same = new == old
        step = rng.choice([-1.0, 1.0], size=count)
        step = np.where(old + step > 5, -1.0, np.where(old + step < 1, 1, step))
        new = np.where(same, old + step, new)
        start, end = self.config.window(span)
        when = start + np.floor(rng.random(count) * (end - start))
        self.p_rating[chosen] = new
        self.p_time[chosen] = when.astype(np.int64)

    def _interact(self, span: int) -> None:
        rng = self.rng
        config = self.config
        users = np.flatnonzero(self.u_alive)
        items = np.flatnonzero(self.i_alive)
        if len(users) == 0 or len(items) == 0:
            return
        rated = np.bincount(self.p_user, minlength=len(self.u_key))[users]
        wanted = rng.poisson(
            config.interactions_per_user * self.u_activity[users]
        )
        wanted = np.where(
            self.u_span[users] == span, np.maximum(wanted, 1), wanted
        )
        wanted = np.minimum(wanted, len(items) - rated)

        age = span - self.i_span[items]
        item_logit = (self.i_logpop[items] + _NOVELTY * 0.5**age).astype(
            np.float32
        )
        item_vec_t = ((_TASTE * self.scale) * self.i_vec[items].T).astype(
            np.float32
        )
        column_of = np.full(len(self.i_key), -1, dtype=np.int64)
        column_of[items] = np.arange(len(items))
        row_of = np.full(len(self.u_key), -1, dtype=np.int64)

        new_users, new_items = [], []
        for first in range(0, len(users), _CHUNK):
            chunk = users[first : first + _CHUNK]
            counts = wanted[first : first + _CHUNK]
            scores = self.u_vec[chunk].astype(np.float32) @ item_vec_t
            scores += item_logit
            scores += _gumbel(rng, scores.shape)
            row_of[chunk] = np.arange(len(chunk))
            mine = row_of[self.p_user] >= 0
            scores[
                row_of[self.p_user[mine]], column_of[self.p_item[mine]]
            ] = -np.inf
            row_of[chunk] = -1
            top = int(counts.max())
            if top == 0:
                continue
            if top < len(items):
                best = np.argpartition(-scores, top - 1, axis=1)[:, :top]
            else:
                best = np.broadcast_to(np.arange(len(items)), scores.shape)
            best_scores = np.take_along_axis(scores, best, axis=1)
            order = np.argsort(-best_scores, axis=1, kind="stable")
            best = np.take_along_axis(best, order, axis=1)
            take = np.arange(top)[None, :] < counts[:, None]
            new_users.append(np.broadcast_to(chunk[:, None], best.shape)[take])
            new_items.append(items[best[take]])

        picked_users = np.concatenate(new_users or [np.empty(0, np.int64)])
        picked_items = np.concatenate(new_items or [np.empty(0, np.int64)])
        extra_users, extra_items = self._first_fans(span, users, picked_items)
        picked_users = np.concatenate([picked_users, extra_users])
        picked_items = np.concatenate([picked_items, extra_items])
        self._record(span, picked_users, picked_items)

    def _first_fans(
        self, span: int, users: np.ndarray, picked_items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gives every item that arrived this span at least one user."""
        fresh = np.flatnonzero(self.i_alive & (self.i_span == span))
        hits = np.bincount(picked_items, minlength=len(self.i_key))
        lonely = fresh[hits[fresh] == 0]
        if len(lonely) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        affinity = (_TASTE * self.scale) * (
            self.u_vec[users] @ self.i_vec[lonely].T
        )
        noisy = affinity + self.rng.gumbel(size=affinity.shape)
        return users[np.argmax(noisy, axis=0)], lonely

    def _record(self, span: int, users: np.ndarray, items: np.ndarray) -> None:
        start, end = self.config.window(span)
        low = np.maximum(self.u_arrival[users], self.i_arrival[items])
        low = np.maximum(low, start)
        offsets = np.floor(self.rng.random(len(users)) * (end - low))
        when = low + offsets.astype(np.int64)
        ratings = self._rate(users, items)
        self.p_user = np.concatenate([self.p_user, users])
        self.p_item = np.concatenate([self.p_item, items])
        self.p_rating = np.concatenate([self.p_rating, ratings])
        self.p_time = np.concatenate([self.p_time, when])

    # -- output -----------------------------------------------------------

    def snapshot(self) -> pd.DataFrame:
        user_rank = _string_ranks(self.u_key)
        item_rank = _string_ranks(self.i_key)
        order = np.lexsort(
            (item_rank[self.p_item], user_rank[self.p_user], self.p_time)
        )
        users = self.p_user[order]
        items = self.p_item[order]
        return pd.DataFrame(
            {
                "user_id": self.u_key[users],
                "item_id": self.i_key[items],
                "rating": self.p_rating[order].astype(np.float64),
                "timestamp": self.p_time[order].astype(np.int64),
                "item_genres": self.i_genres[items],
                "item_year": self.i_year[items].astype(np.int64),
                "user_age": self.u_age[users].astype(np.int64),
                "user_occupation": self.u_occupation[users],
            },
            columns=list(snapshots.COLUMNS),
        )


def _gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Draws float32 Gumbel(0, 1) noise, as -log of Exp(1) draws."""
    noise = rng.standard_exponential(size=shape, dtype=np.float32)
    np.maximum(noise, np.float32(1e-30), out=noise)
    np.log(noise, out=noise)
    np.negative(noise, out=noise)
    return noise


def _string_ranks(keys: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(keys), dtype=np.int64)
    ranks[np.argsort(keys, kind="stable")] = np.arange(len(keys))
    return ranks


def generate(config: SyntheticConfig | None = None) -> list[pd.DataFrame]:
    """Generates a synthetic interaction history.

    Args:
        config: What to generate; ``SyntheticConfig()`` when omitted.

    Returns:
        One snapshot per span, for spans 1 to ``config.num_spans`` in
        order. Each is the full state at the end of its span, with the
        columns in ``snapshots.COLUMNS`` and rows sorted by (timestamp,
        user_id, item_id).
    """
    config = SyntheticConfig() if config is None else config
    world = _World(config)
    frames = []
    for span in range(1, config.num_spans + 1):
        world.step(span)
        frames.append(world.snapshot())
    return frames


def write_history(
    root: str | os.PathLike[str], config: SyntheticConfig | None = None
) -> list[pathlib.Path]:
    """Generates a history and writes span ``n`` as ``<root>/span-<n>``.

    Spans already under ``root`` with the same numbers are replaced; other
    spans are left alone.

    Args:
        root: The directory that holds the spans; created if needed.
        config: What to generate; ``SyntheticConfig()`` when omitted.

    Returns:
        The written CSV files, for spans 1 to ``config.num_spans``.
    """
    frames = generate(config)
    return [
        snapshots.write_span(root, span, frame)
        for span, frame in enumerate(frames, start=1)
    ]

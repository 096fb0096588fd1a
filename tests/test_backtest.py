"""Backtest scoring, data preparation, results file and report."""

import base64
import io
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline import backtest, snapshots, synthetic
from pipeline.report import write_report
from tests.report_screenshot import chromium, colour_share, screenshot


def test_top_items_leaves_out_what_the_user_has_and_ranks_the_rest():
    catalogue = ["a", "b", "c", "d", "e"]
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])

    lists = backtest.top_items(
        scores, catalogue, ["u1", "u2"], {"u1": {"a", "c", "zz"}}, k=3
    )

    assert lists == {"u1": ["b", "d", "e"], "u2": ["e", "d", "c"]}


def test_top_items_is_shorter_when_the_user_has_most_of_the_catalogue():
    lists = backtest.top_items(
        np.array([[1.0, 2.0, 3.0]]), ["a", "b", "c"], ["u"], {"u": {"c", "b"}}
    )

    assert lists == {"u": ["a"]}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 30)),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 1000),
)
def test_recall_by_slice_counts_the_hits_of_each_slice(pairs, seed):
    rng = np.random.default_rng(seed)
    held = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u, _ in pairs],
            "item_id": [f"i{i}" for _, i in pairs],
        }
    )
    lists = {
        f"u{u}": [f"i{i}" for i in rng.permutation(31)[:60]] for u in range(5)
    }
    returning = {"u0", "u1", "u2"}
    new_items = {f"i{i}" for i in range(10)}

    result = backtest.recall_by_slice(lists, held, returning, new_items)

    for name, keep in {
        "all": lambda u, i: True,
        "returning": lambda u, i: u in returning,
        "new_users": lambda u, i: u not in returning,
        "new_items": lambda u, i: i in new_items,
    }.items():
        rows = [
            (u, i)
            for u, i in zip(held.user_id, held.item_id, strict=True)
            if keep(u, i)
        ]
        assert result[name]["pairs"] == len(rows)
        for k in backtest.CUTOFFS:
            hits = sum(i in lists.get(u, [])[:k] for u, i in rows)
            expected = hits / len(rows) if rows else None
            assert result[name]["recall"][str(k)] == expected


def test_recall_by_slice_leaves_new_items_empty_without_a_previous_span():
    held = pd.DataFrame({"user_id": ["u"], "item_id": ["i"]})

    result = backtest.recall_by_slice({"u": ["i"]}, held, set(), None)

    assert result["new_items"] == {
        "pairs": 0,
        "recall": {"10": None, "50": None, "100": None},
    }
    assert result["new_users"]["recall"]["10"] == 1.0


def test_popularity_ranks_the_newest_span_first_then_all_time_counts():
    previous = pd.DataFrame(
        {"item_id": ["old"] * 5 + ["b"], "timestamp": [1, 2, 3, 4, 5, 5]}
    )
    snapshot = pd.concat(
        [
            previous,
            pd.DataFrame(
                {
                    "item_id": ["a", "a", "b", "c", "b"],
                    "timestamp": [6, 7, 8, 9, 9],
                }
            ),
        ]
    )

    ranking = backtest.popularity_ranking(snapshot, previous)

    # a and b both have 2 new interactions; b has 3 in all. Then c (one
    # new), then old (none new, 5 in all).
    assert ranking == ["b", "a", "c", "old"]
    assert backtest.popularity_ranking(snapshot, None)[0] == "old"


def test_prepare_data_writes_each_span_once_and_refuses_other_data(tmp_path):
    source = backtest.Source(format="synthetic", spans=2, seed=3)

    data = backtest.prepare_data(source, tmp_path)
    first = snapshots.read_span(data, 1)
    (snapshots.span_dir(data, 1) / snapshots.FILE_NAME).write_text("kept")
    again = backtest.prepare_data(source, tmp_path)

    assert again == data and snapshots.list_spans(data) == [1, 2, 3]
    assert len(first) > 0
    # The second call reused the spans rather than writing them anew.
    assert (snapshots.span_dir(data, 1) / snapshots.FILE_NAME).read_text() == (
        "kept"
    )
    with pytest.raises(ValueError, match="holds a backtest of other data"):
        backtest.prepare_data(
            backtest.Source(format="synthetic", spans=2, seed=4), tmp_path
        )


@pytest.mark.parametrize(
    ("initial_fraction", "spans", "past"), [(0.5, 2, 2), (0.75, 2, 6)]
)
def test_a_synthetic_span_1_holds_its_share_of_the_history(
    tmp_path, initial_fraction, spans, past
):
    source = backtest.Source(
        format="synthetic",
        spans=spans,
        seed=3,
        initial_fraction=initial_fraction,
    )
    assert source.history_spans() == past

    data = backtest.prepare_data(source, tmp_path)

    frames = synthetic.generate(
        synthetic.SyntheticConfig(seed=3, num_spans=past + spans)
    )
    assert snapshots.list_spans(data) == list(range(1, spans + 2))
    for span, frame in enumerate(frames[past - 1 :], start=1):
        written = snapshots.read_span(data, span)
        assert len(written) == len(frame)
        assert set(written["user_id"]) == set(frame["user_id"])
    pairs = [len(snapshots.read_span(data, s)) for s in (1, spans + 1)]
    new_pairs = pairs[1] - pairs[0]
    # Pairs also vanish with their users and items: roughly the share.
    assert abs(pairs[0] / (pairs[0] + new_pairs) - initial_fraction) < 0.1


def test_a_movielens_source_needs_its_ratings():
    with pytest.raises(ValueError, match="needs --ratings"):
        backtest.Source(format="movielens-100k")


def _record(policy: str, span: int, recall: float, **fields) -> dict:
    metrics = {
        name: {
            "pairs": 10,
            "recall": {"10": recall / 4, "50": recall / 2, "100": recall},
        }
        for name in backtest.SLICES
    }
    record = {
        "policy": policy,
        "span": span,
        "scored_on": span + 1,
        "mode": "warm" if span > 1 else "cold",
        "metrics": metrics,
        "train_seconds": 10.0 / span,
        "overhead_seconds": 30.0,
        "examples": 1000 // span,
        "user_vocabulary": 100 + 10 * span,
        "item_vocabulary": 50 + 5 * span,
        "blessed": True,
        "pushed": True,
        "delta": {
            "added": 100,
            "removed": 5,
            "modified": 7,
            "new_users": 10,
            "new_items": 5,
            "vanished_items": 1,
        },
    }
    record.update(fields)
    return record


def test_policy_means_leave_out_the_cold_first_span():
    records = [
        _record("warm", 3, 0.5, epochs=2),
        _record("warm", 1, 0.9, epochs=2),
        _record("warm", 2, 0.3, epochs=1),
        _record("popularity", 1, 0.2),
    ]
    # A slice with no pairs in a span has no recall there.
    records[0]["metrics"]["new_items"]["recall"]["100"] = None

    means = backtest.policy_means(records)

    assert list(means) == ["warm", "popularity"]
    warm = means["warm"]
    assert warm["all@100"] == pytest.approx(0.4)
    assert warm["all@10"] == pytest.approx(0.1)
    assert warm["new_items@100"] == pytest.approx(0.3)
    assert warm["train_seconds"] == pytest.approx((5.0 + 10.0 / 3) / 2)
    assert warm["example_passes"] == pytest.approx((500 + 333 * 2) / 2)
    assert warm["first_step_seconds"] is None
    # A policy with one span keeps it.
    assert means["popularity"]["all@100"] == pytest.approx(0.2)
    assert means["popularity"]["example_passes"] is None
    table = backtest.summary_table(records)
    assert "after the first" in table[0]
    assert table[2].split()[:4] == ["warm", "0.100", "0.200", "0.400"]


def test_merge_records_replaces_a_policy_and_keeps_the_others(tmp_path):
    path = tmp_path / backtest.RESULTS_FILE
    backtest.merge_records(
        path, [_record("popularity", s, 0.3) for s in (1, 2)]
    )
    backtest.merge_records(path, [_record("warm", s, 0.1) for s in (1, 2)])

    merged = backtest.merge_records(path, [_record("warm", 1, 0.5)])

    on_disk = json.loads(path.read_text())["records"]
    assert on_disk == merged
    assert [(r["policy"], r["span"]) for r in merged] == [
        ("warm", 1),
        ("popularity", 1),
        ("popularity", 2),
    ]
    assert merged[0]["metrics"]["all"]["recall"]["100"] == 0.5


def test_a_policy_is_not_run_over_an_earlier_run_of_it(tmp_path):
    earlier = tmp_path / "out" / "warm" / "pipeline"
    earlier.mkdir(parents=True)

    def run_span(config, printer):
        raise AssertionError("a span ran over the earlier run")

    with pytest.raises(FileExistsError, match="earlier run of the warm"):
        backtest.run_policy(
            "warm", tmp_path / "data", tmp_path / "out", run_span=run_span
        )
    # Another policy's folder is its own.
    backtest.check_no_earlier_run(tmp_path / "out", "full")


def _images(page: str) -> list[Image.Image]:
    sources = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(s))) for s in sources]


def test_the_report_embeds_one_plot_per_view_and_every_policy(tmp_path):
    records = [
        _record(policy, span, recall)
        for policy, recall in (("warm", 0.4), ("full", 0.38), ("stale", 0.2))
        for span in (1, 2, 3)
    ] + [_record("popularity", s, 0.3, user_vocabulary=None) for s in (1, 2)]

    path = write_report(records, tmp_path / "report.html")

    page = path.read_text()
    images = _images(page)
    assert len(images) == 4
    for image in images:
        image.load()  # Raises on a truncated or corrupt PNG.
        assert image.width > 400 and image.height > 200
    for heading in (
        "Recall@100 per span",
        "Training time per span",
        "Vocabulary growth",
        "Delta composition",
    ):
        assert f"<h2>{heading}</h2>" in page
    # The means table has the warm/full ratio: 0.4 / 0.38.
    assert "<td>warm / full</td><td>1.05</td>" in page
    assert page.count("<tr><td>stale</td>") == 3 + 1  # spans, then mean


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="needs Chromium (.ci/run installs it)",
)
def test_the_report_shows_its_plots_in_headless_chromium(tmp_path):
    records = [
        _record(policy, span, recall)
        for policy, recall in (("warm", 0.4), ("popularity", 0.3))
        for span in (1, 2, 3)
    ]
    page = write_report(records, tmp_path / "report.html")

    shot = screenshot(page, tmp_path / "report.png")

    # Broken images would show as small icons and alt text: the plots'
    # colours would be all but absent.
    assert colour_share(shot, "#d95f02") > 0.005  # the warm lines
    assert colour_share(shot, "#1b9e77") > 0.003  # pairs added, bars
    assert colour_share(shot, "#ffffff") < 0.97

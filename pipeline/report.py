"""The backtest report: one self-contained HTML page with its plots inline.

`write_report` draws the records of `pipeline.backtest` (any mix of
policies) with matplotlib and embeds each figure as a PNG data URI, so the
page opens anywhere without the files next to it:

- Recall@100 per span and policy: overall, returning users, new users,
  new items;
- training seconds and the rest of the pipeline's seconds per span;
- vocabulary growth: user and item vocabulary sizes per span;
- delta composition: pairs added, removed and modified per span, and the
  users and items that arrived;

then a table with every record's figures, and the means and the warm/full
ratios when both ran.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backtest import POLICIES, policy_means

__all__ = ["write_report"]

_COLOURS = {
    "warm": "#d95f02",
    "full": "#1b9e77",
    "stale": "#7570b3",
    "popularity": "#666666",
}
_SLICE_TITLES = {
    "all": "all interactions",
    "returning": "returning users",
    "new_users": "new users",
    "new_items": "new items (launched in the training span)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_policy(records: Sequence[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for policy in POLICIES:
        rows = [r for r in records if r["policy"] == policy]
        if rows:
            grouped[policy] = sorted(rows, key=lambda r: r["span"])
    return grouped


def _png(figure) -> str:
    from matplotlib.ticker import MaxNLocator

    for axis in figure.axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    _pyplot().close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _recall_figure(grouped: dict[str, list[dict]]) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    for axis, (name, title) in zip(
        axes.flat, _SLICE_TITLES.items(), strict=True
    ):
        for policy, rows in grouped.items():
            points = [
                (r["scored_on"], r["metrics"][name]["recall"]["100"])
                for r in rows
                if r["metrics"][name]["recall"]["100"] is not None
            ]
            if points:
                x, y = zip(*points, strict=True)
                axis.plot(
                    x, y, marker="o", label=policy, color=_COLOURS[policy]
                )
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("Recall@100")
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    for axis in axes[1]:
        axis.set_xlabel("span scored (the model of the span before)")
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Recall@100 on the next span, per policy")
    return _png(figure)


def _cost_figure(grouped: dict[str, list[dict]]) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    trained = {p: rows for p, rows in grouped.items() if p != "popularity"}
    width = 0.8 / max(len(trained), 1)
    for i, (policy, rows) in enumerate(trained.items()):
        spans = np.array([r["span"] for r in rows], float)
        for axis, key in zip(
            axes, ("train_seconds", "overhead_seconds"), strict=True
        ):
            axis.bar(
                spans + (i - (len(trained) - 1) / 2) * width,
                [r[key] for r in rows],
                width,
                label=policy,
                color=_COLOURS[policy],
            )
    axes[0].set_title("training (model fit) seconds", fontsize=10)
    axes[1].set_title("rest of the pipeline, seconds", fontsize=10)
    for axis in axes:
        axis.set_xlabel("span trained")
        axis.grid(alpha=0.3, axis="y")
    if trained:
        axes[0].legend(fontsize=8)
    figure.suptitle("What each span cost")
    return _png(figure)


def _vocabulary_figure(grouped: dict[str, list[dict]]) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, key, title in (
        (axes[0], "user_vocabulary", "user vocabulary"),
        (axes[1], "item_vocabulary", "item vocabulary"),
    ):
        for policy, rows in grouped.items():
            points = [(r["span"], r[key]) for r in rows if r[key] is not None]
            if points:
                x, y = zip(*points, strict=True)
                axis.plot(
                    x, y, marker="o", label=policy, color=_COLOURS[policy]
                )
        axis.set_title(f"{title} (ids)", fontsize=10)
        axis.set_xlabel("span trained")
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    if any(r["user_vocabulary"] for rows in grouped.values() for r in rows):
        axes[0].legend(fontsize=8)
    figure.suptitle("Vocabulary growth")
    return _png(figure)


def _delta_figure(records: Sequence[dict]) -> str:
    plt = _pyplot()
    per_span = {r["span"]: r["delta"] for r in records}
    spans = sorted(per_span)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bottom = np.zeros(len(spans))
    for key, colour in (
        ("added", "#1b9e77"),
        ("modified", "#e6ab02"),
        ("removed", "#d95f02"),
    ):
        values = np.array([per_span[s][key] for s in spans], float)
        axes[0].bar(spans, values, bottom=bottom, label=key, color=colour)
        bottom += values
    axes[0].set_title("pairs changed since the span before", fontsize=10)
    axes[0].legend(fontsize=8)
    width = 0.27
    for i, (key, colour) in enumerate(
        (
            ("new_users", "#7570b3"),
            ("new_items", "#e7298a"),
            ("vanished_items", "#999999"),
        )
    ):
        axes[1].bar(
            np.array(spans, float) + (i - 1) * width,
            [per_span[s][key] for s in spans],
            width,
            label=key.replace("_", " "),
            color=colour,
        )
    axes[1].set_title("ids arriving and leaving", fontsize=10)
    axes[1].legend(fontsize=8)
    for axis in axes:
        axis.set_xlabel("span")
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle("Delta composition")
    return _png(figure)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _summary_rows(records: Sequence[dict]) -> list[list[str]]:
    means = policy_means(records)
    keys = [f"{s}@100" for s in _SLICE_TITLES] + [
        "train_seconds",
        "overhead_seconds",
        "examples",
    ]
    digits = [3] * len(_SLICE_TITLES) + [1, 1, 0]
    rows = [
        [policy]
        + [_fmt(figures[key], n) for key, n in zip(keys, digits, strict=True)]
        for policy, figures in means.items()
    ]
    if "warm" in means and "full" in means:
        warm, full = means["warm"], means["full"]
        rows.append(
            ["warm / full"]
            + [
                _fmt(
                    warm[key] / full[key]
                    if warm[key] is not None and full[key]
                    else None,
                    2,
                )
                for key in keys
            ]
        )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _record_rows(records: Sequence[dict]) -> list[list[str]]:
    rows = []
    for r in records:
        metrics = r["metrics"]
        rows.append(
            [
                html.escape(r["policy"]),
                _fmt(r["span"]),
                _fmt(r["scored_on"]),
                _fmt(r["mode"]),
                *(_fmt(metrics["all"]["recall"][k]) for k in ("10", "50")),
                *(_fmt(metrics[s]["recall"]["100"]) for s in _SLICE_TITLES),
                _fmt(metrics["all"]["pairs"]),
                _fmt(r["train_seconds"], 1),
                _fmt(r["overhead_seconds"], 1),
                _fmt(r["examples"]),
                _fmt(r["user_vocabulary"]),
                _fmt(r["item_vocabulary"]),
                _fmt(r["blessed"]),
                _fmt(r["pushed"]),
            ]
        )
    return rows


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f3f3f3; } td:first-child { text-align: left; }
p.note { color: #555; font-size: 0.9em; }
"""


def write_report(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    title: str = "freshtower backtest",
    source: dict[str, Any] | None = None,
) -> Path:
    """Writes the report page of `records` to `path` (see the module doc).

    Args:
      records: backtest records, as `pipeline.backtest.run_policy` returns
        them, of one or more policies.
      path: the HTML file to write; replaced atomically.
      title: the page's heading.
      source: what the history was (shown under the heading).

    Returns:
      The path written.
    """
    if not records:
        raise ValueError("No backtest records to report.")
    grouped = _by_policy(records)
    ordered = [r for rows in grouped.values() for r in rows]
    figures = [
        ("Recall@100 per span", _recall_figure(grouped)),
        ("Training time per span", _cost_figure(grouped)),
        ("Vocabulary growth", _vocabulary_figure(grouped)),
        ("Delta composition", _delta_figure(ordered)),
    ]
    source_line = (
        ", ".join(f"{k}={html.escape(str(v))}" for k, v in source.items())
        if source
        else ""
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        f'<p class="note">Data: {source_line}</p>' if source_line else "",
        '<p class="note">The model in force after span t is scored on the '
        "pairs span t + 1 adds; each user's top 100 leaves out the items "
        "that user already has. Policies: "
        + ", ".join(html.escape(p) for p in grouped)
        + ".</p>",
        "<h2>Means over the spans after the first</h2>",
        '<p class="note">Span 1 is a cold start under every policy that '
        "trains.</p>",
        _table(
            ["policy", "R@100 all", "returning", "new users", "new items"]
            + ["train s", "other s", "examples"],
            _summary_rows(records),
        ),
    ]
    for heading, png in figures:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(
            f'<img alt="{html.escape(heading)}" '
            f'src="data:image/png;base64,{png}">'
        )
    parts += [
        "<h2>Every span</h2>",
        _table(
            ["policy", "span", "scored on", "start", "R@10", "R@50"]
            + ["R@100", "returning", "new users", "new items", "pairs"]
            + ["train s", "other s", "examples", "users", "items"]
            + ["blessed", "pushed"],
            _record_rows(ordered),
        ),
        "</body></html>",
    ]
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    os.replace(partial, target)
    return target

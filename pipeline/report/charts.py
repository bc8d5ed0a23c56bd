"""The report's charts as inline SVG, drawn by matplotlib (see pyproject.toml for why).

Each series is an SVG group whose id names it (`family-credential`, `action-would-block`,
`route-0`), so the HTML carries its data in a form a test (or a person's browser search) can find;
text stays text (`svg.fonttype = none`) and the output has no date in it: the same data draws the
same bytes. No pyplot: a `Figure` per chart, no global state, no display needed.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Sequence

import matplotlib
import matplotlib.dates as mdates
from matplotlib.figure import Figure

__all__ = ["bar_chart", "stacked_bars"]

# Colour-blind-safe (Okabe-Ito), in a fixed order so a family keeps its colour across reports.
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
)
_XML_HEAD = re.compile(r"^.*?(?=<svg)", re.S)


def _svg(fig: Figure, name: str) -> str:
    # A salt per chart keeps the clip-path ids of several inline SVGs in one page apart.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    svg = _XML_HEAD.sub("", buf.getvalue(), count=1)
    # Ids of figure parts repeat from one chart to the next; scope them by chart.
    return re.sub(
        r'id="(figure|axes|patch|text|legend|line2d|matplotlib\.axis)_(\d+)"',
        rf'id="{name}-\1_\2"',
        svg,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def stacked_bars(
    name: str,
    title: str,
    buckets: Sequence[int],
    bucket_ms: int,
    series: dict[str, Sequence[int]],
    prefix: str,
) -> str:
    """Counts per time bucket, one stacked colour per series (group id `<prefix>-<series>`)."""
    fig = Figure(figsize=(9, 3.2), dpi=96)
    ax = fig.add_subplot()
    times = [float(mdates.date2num(dt.datetime.fromtimestamp(b / 1000, dt.UTC))) for b in buckets]
    width = bucket_ms * 0.9 / 86_400_000  # in days, matplotlib's date unit
    bottom = [0] * len(buckets)
    for i, (label, values) in enumerate(series.items()):
        bars = ax.bar(
            times,
            values,
            width=width,
            bottom=bottom,
            align="edge",
            label=label,
            color=PALETTE[i % len(PALETTE)],
        )
        group = f"{prefix}-{_slug(label)}"
        for j, rect in enumerate(bars.patches):
            rect.set_gid(f"{group}-{j}")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_ylabel("alerts")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=min(4, len(series)))
    ax.xaxis_date(tz=dt.UTC)
    fig.autofmt_xdate()
    return _svg(fig, name)


def bar_chart(
    name: str, title: str, labels: Sequence[str], values: Sequence[float], unit: str
) -> str:
    """Horizontal bars, one per label (rect ids `<name>-bar-<i>`)."""
    fig = Figure(figsize=(9, 0.45 * max(2, len(labels)) + 0.8), dpi=96)
    ax = fig.add_subplot()
    bars = ax.barh(list(range(len(labels))), values, color=PALETTE[1])
    for i, rect in enumerate(bars.patches):
        rect.set_gid(f"{name}-bar-{i}")
    ax.set_yticks(list(range(len(labels))), labels=list(labels), fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title, loc="left", fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, name)

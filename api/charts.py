"""Peer charts: the peers' values of an indicator as a histogram with their median dashed
(matplotlib), and the provider's value as a dark line over it.

The peers' part is the same for every member of a peer group, so it is drawn once per group,
indicator and language (and a browser can keep it as an image: ``peer_svg``); the provider's
line is placed on it by the chart's fixed frame (``marker``), without drawing again. Creating
a matplotlib figure costs three times what drawing it does, so one figure is made once and
redrawn with each chart's data, under a lock (a figure is not safe to share between threads).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from api.formats import Lang, formatter

# The figure in points (an SVG's units at 72 dots per inch) and where its axis sits in it.
WIDTH, HEIGHT = 245.0, 68.0
LEFT, RIGHT, BOTTOM, TOP = 0.03, 0.97, 0.3, 0.97
MARGIN = 0.05  # of the peers' range, either side
PROVIDER_LINE = 'stroke="#1f4e79" stroke-width="2.2" class="provider"'


def span(values: Sequence[float], median: float) -> tuple[float, float]:
    """The x range a chart of ``values`` shows: the histogram's with a margin either side."""
    return _with_margin(_bins_range(values, median))


def _with_margin(bins: tuple[float, float]) -> tuple[float, float]:
    low, high = bins
    margin = MARGIN * (high - low)
    return low - margin, high + margin


def _bins_range(values: Sequence[float], median: float) -> tuple[float, float]:
    """The range the histogram's bars cover: the peers' values, widened a little around a
    single value (a share of 0 % for every peer stays near 0 %, not from -50 % to 50 %)."""
    low, high = (float(min(values)), float(max(values))) if len(values) else (median, median)
    if low == high:
        pad = max(abs(low) * 0.1, 0.01)
        low, high = low - pad, high + pad
    return low, high


def marker(value: float, shown: tuple[float, float]) -> str:
    """The provider's line at ``value`` on a chart showing the range ``shown``, in SVG units."""
    low, high = shown
    x = WIDTH * (LEFT + (RIGHT - LEFT) * (value - low) / (high - low))
    top, bottom = HEIGHT * (1 - TOP), HEIGHT * (1 - BOTTOM)
    return f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{top:.2f}" y2="{bottom:.2f}" {PROVIDER_LINE}/>'


def charts(indicators: Iterable[dict[str, Any]], lang: Lang) -> list[str]:
    """One self-contained SVG per indicator (``peer_values``, ``peer_median``, ``kind``,
    ``value``): the peers' chart with the provider's line, for a printable document."""
    drawn = []
    for indicator in indicators:
        values = tuple(indicator["peer_values"])
        svg = peer_svg(values, indicator["peer_median"], indicator["kind"], lang)
        end = svg.rindex("</svg>")
        drawn.append(svg[:end] + marker(indicator["value"], span(values, indicator["peer_median"])) + svg[end:])
    return drawn


@lru_cache(maxsize=4096)
def peer_svg(values: tuple[float, ...], median: float, kind: str, lang: Lang) -> str:
    """The peers' histogram and median as an SVG document, its axis written in ``lang``."""
    with _canvas_lock:
        return _canvas().draw(np.array(values), median, _bins_range(values, median), formatter(kind, lang))


class _Canvas:
    """One figure with one axis, redrawn for each chart."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure  # only where a chart is drawn: the CLI starts faster without it
        from matplotlib.ticker import MaxNLocator

        self.figure = Figure(figsize=(WIDTH / 72, HEIGHT / 72), dpi=72)
        self.figure.subplots_adjust(left=LEFT, right=RIGHT, bottom=BOTTOM, top=TOP)
        self.axis = self.figure.add_subplot()
        self.axis.yaxis.set_visible(False)
        for side in ("top", "right", "left"):
            self.axis.spines[side].set_visible(False)
        self.axis.tick_params(axis="x", labelsize=7)
        self.axis.xaxis.set_major_locator(MaxNLocator(4))
        # One filled outline for the bars draws faster than a patch per bar.
        self.bars = self.axis.stairs([0.0], [0.0, 1.0], fill=True, color="#c9d6e3")
        self.median = self.axis.axvline(0.0, color="#6b7c8f", linestyle="--", linewidth=1)

    def draw(self, peers: np.ndarray, median: float, bins: tuple[float, float], show: Callable[[float], str]) -> str:
        """The chart of ``peers`` whose bars cover ``bins`` (the x range shown adds a margin)."""
        import matplotlib
        from matplotlib.ticker import FuncFormatter

        counts, edges = np.histogram(peers, bins=min(30, max(5, len(peers) // 4)), range=bins)
        self.bars.set_data(counts, edges)
        self.median.set_xdata([median, median])
        self.axis.set_xlim(*_with_margin(bins))
        self.axis.set_ylim(0.0, max(1.0, float(counts.max())) * 1.05)
        self.axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: show(v)))
        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "secm"}):  # text as text, stable ids
            self.figure.savefig(buffer, format="svg", metadata={"Date": None})
        svg = buffer.getvalue()
        return svg[svg.index("<svg") :]


_canvas_lock = threading.Lock()


@lru_cache(maxsize=1)
def _canvas() -> _Canvas:
    return _Canvas()

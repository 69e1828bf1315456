"""Peer charts: the provider's line lands where matplotlib draws the same value, in any order of drawing."""

from __future__ import annotations

import re

import pytest

from api.charts import charts, marker, peer_svg, span

MEDIAN_PATH = re.compile(r'<path d="M ([0-9.]+) ([0-9.]+) \s*L ([0-9.]+) ([0-9.]+) \s*"[^>]*stroke-dasharray')
MARKER = re.compile(r'<line x1="([0-9.]+)" x2="([0-9.]+)" y1="([0-9.]+)" y2="([0-9.]+)"')


@pytest.mark.parametrize(
    "values",
    [
        (1.0, 2.0, 3.0, 4.0, 10.0),
        (0.02, 0.03, 0.031, 0.04, 0.05, 0.09, 0.12, 0.3),
        (5.0,),  # one peer: the range is widened around it
        (0.0, 0.0, 0.0, 0.0),  # a share nobody bills
        (7.0, 7.0, 7.0),
    ],
)
def test_the_providers_line_is_placed_on_the_charts_own_scale(values: tuple[float, ...]) -> None:
    """A provider whose value is the peers' median gets its line on the dashed median line
    matplotlib drew: the page places the line without drawing the chart again."""
    median = sorted(values)[len(values) // 2]
    drawn = MEDIAN_PATH.search(peer_svg(values, median, "level", "en"))
    assert drawn is not None
    placed = MARKER.search(marker(median, span(values, median)))
    assert placed is not None
    x, top, bottom = float(drawn.group(1)), float(drawn.group(4)), float(drawn.group(2))
    assert float(placed.group(1)) == pytest.approx(x, abs=0.01)
    assert float(placed.group(3)) == pytest.approx(top, abs=0.01)
    assert float(placed.group(4)) == pytest.approx(bottom, abs=0.01)


def test_a_chart_is_the_same_whatever_was_drawn_before() -> None:
    """One figure is redrawn for every chart: nothing of a chart may remain in the next."""
    first = (0.1, 0.2, 0.2, 0.3, 0.5)
    alone = peer_svg(first, 0.2, "share", "fr")
    peer_svg.cache_clear()
    peer_svg(tuple(range(100)), 50.0, "amount", "en")
    peer_svg((), 1.0, "level", "nl")
    assert peer_svg(first, 0.2, "share", "fr") == alone


def test_the_axis_is_written_in_the_readers_language() -> None:
    values = tuple(i / 10 for i in range(11))
    french, english = peer_svg(values, 0.5, "share", "fr"), peer_svg(values, 0.5, "share", "en")
    assert re.search(r">[0-9]+,0\u00a0%<", french)
    assert not re.search(r">[0-9]+\.0%<", french)
    assert re.search(r">[0-9]+\.0%<", english)
    nobody = peer_svg((0.0, 0.0, 0.0), 0.0, "share", "en")  # stays around 0 %, not from -50 % to 50 %
    assert ">0.0%<" in nobody
    assert ">-30.0%<" not in nobody


def test_a_document_chart_carries_the_peers_and_the_provider() -> None:
    indicator = {"peer_values": [1.0, 2.0, 3.0], "peer_median": 2.0, "kind": "level", "value": 3.0}
    (svg,) = charts([indicator], "en")
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>\n")
    assert 'class="provider"' in svg
    assert "stroke-dasharray" in svg

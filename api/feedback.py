"""A provider's feedback profile: their billing against comparable providers, for them to read.

The 2024 note wants every provider to see their billing profile "compared to their group with
a comparable patient population", as a first step of the graduated response (sensitisation
before warning). So the document is written for the provider, not the inspector: plain
words, no score, no patient-level data (only the published profiles, peer groups and flag
counts are read). It shows, for one period of a published run:

- each indicator of the peer comparison (``detectors.evidence.GROUPS``) against the peer
  group: the provider's value, the peers' median, the share of peers below, the value
  expected for the provider's own patients where the patient mix is known, and a chart of the
  peers' values with the provider's marked;
- late billing per channel: lines, late lines and the legal deadline of that channel for the
  provider's profession, from the rule catalog of the run's legislation;
- what the rules found: lines and amounts per rule, with its title, why it matters and legal
  basis in the reader's language.

``feedback_profile`` gathers the figures (language-free); ``render`` writes them as one
self-contained, printable HTML page in French, Dutch or English (:mod:`api.documents`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa

from api import documents, formats
from api import tables as t
from api.formats import Lang
from api.queries import NotPublished, flags_by_rule, published_run
from detectors.indicators import GROUPS, SHARES
from detectors.profiles import CHANNEL_LINES, period_bounds
from rules import load_catalog
from rules.catalog import DeadlineCheck

LATE_RULE = "LATE_ATTESTATION"
AMOUNTS = ("amount_per_patient",)


def feedback_profile(
    connection: sa.Connection, nihdi: str, run_id: str | None = None, period: str | None = None
) -> dict[str, Any]:
    """The figures of a provider's feedback profile in a run (default: the newest) and period
    (default: the provider's latest); ``NotPublished`` when there are none."""
    run = published_run(connection, run_id)
    ps = t.provider_scores.c
    own = t.records(
        connection.execute(
            sa.select(ps.period, ps.peer_group, ps.peer_group_size, ps.profile)
            .where(ps.run_id == run, ps.provider_nihdi == nihdi)
            .order_by(ps.period)
        )
    )
    if not own:
        raise NotPublished(f"Provider {nihdi} has no profile in run {run}")
    periods = [r["period"] for r in own]
    chosen = period or periods[-1]
    row = next((r for r in own if r["period"] == chosen), None)
    if row is None:
        raise NotPublished(
            f"Provider {nihdi} has no profile for period {chosen} in run {run}; it has {', '.join(periods)}"
        )
    profile = json.loads(row["profile"])
    peers = [
        json.loads(p)
        for p in connection.execute(
            sa.select(ps.profile).where(ps.run_id == run, ps.period == chosen, ps.peer_group == row["peer_group"])
        ).scalars()
    ]
    legislation = connection.execute(sa.select(t.runs.c.legislation).where(t.runs.c.run_id == run)).scalar_one()
    start, end = period_bounds(chosen)
    f = t.flags.c
    in_period = [f.service_date >= start, f.service_date < end]
    by_rule = flags_by_rule(connection, run, nihdi, *in_period)
    late: dict[str, int] = dict(
        connection.execute(
            sa.select(f.channel, sa.func.count())
            .where(f.run_id == run, f.provider_nihdi == nihdi, *in_period, f.rule_id == LATE_RULE)
            .group_by(f.channel)
        ).all()
    )
    return {
        "run_id": run,
        "legislation": legislation,
        "provider_nihdi": nihdi,
        "period": chosen,
        "periods": periods,
        "profession": profile.get("profession"),
        "region": profile.get("region"),
        "lines": profile.get("lines"),
        "patients": profile.get("patients"),
        "peer_level": len(row["peer_group"].split("|")) if row["peer_group"] != "all" else 0,
        "peers": row["peer_group_size"],
        "indicators": [_indicator(feature, profile, peers) for members in GROUPS.values() for feature in members],
        "channels": _channels(profile, late, legislation),
        "rules": [
            {"rule_id": r["rule_id"], "lines": int(r["lines"]), "amount_eur": round(float(r["amount_at_stake_eur"]), 2)}
            for r in by_rule
        ],
    }


def _indicator(feature: str, profile: dict[str, Any], peers: list[dict[str, Any]]) -> dict[str, Any]:
    """One indicator against the peers: value, median, share of peers below (ties count half)."""
    value = float(profile.get(feature) or 0.0)
    values = np.array([float(p.get(feature) or 0.0) for p in peers])
    below = float(((values < value).sum() + 0.5 * (values == value).sum()) / len(values)) if len(values) else 0.5
    expected = profile.get(f"expected_{feature}")
    return {
        "feature": feature,
        "kind": kind_of(feature),
        "value": value,
        "peer_median": float(np.median(values)) if len(values) else value,
        "peers_below": below,
        "expected": None if expected is None else float(expected),
        "peer_values": values.tolist(),
    }


def _channels(profile: dict[str, Any], late: dict[str, int], legislation: str) -> list[dict[str, Any]]:
    """Per channel the provider billed through: lines, late lines and the legal deadline."""
    by_channel = deadlines(profile.get("profession"), legislation)
    rows = []
    for channel, column in CHANNEL_LINES.items():
        lines = int(profile.get(column) or 0)
        if lines:
            n = int(late.get(channel, 0))
            rows.append(
                {"channel": channel, "lines": lines, "late": n, "rate": n / lines, "deadline": by_channel.get(channel)}
            )
    return rows


def deadlines(profession: str | None, legislation: str) -> dict[str, dict[str, Any]]:
    """Per channel, the deadline the catalog's late-billing rule sets for a provider of this
    profession billing outside an institution: the first regime whose condition holds."""
    rule = load_catalog().rule(LATE_RULE)
    check = next(c for c in rule.checks if isinstance(c, DeadlineCheck))
    lines = pl.DataFrame(
        {"channel": list(CHANNEL_LINES), "profession": profession, "institution_nihdi": None},
        schema={"channel": pl.String, "profession": pl.String, "institution_nihdi": pl.String},
    )
    found: dict[str, dict[str, Any]] = {}
    for regime in check.regimes:
        try:
            matches = lines.filter(rule.sql(regime.when, legislation))["channel"].to_list()
        except pl.exceptions.PolarsError:  # a condition on columns a profile does not know
            continue
        for channel in matches:
            if regime.years is not None:
                found.setdefault(channel, {"years": rule.resolve(regime.years, legislation)})
            elif regime.months_after_month_end is not None:
                found.setdefault(channel, {"months": rule.resolve(regime.months_after_month_end, legislation)})
    return found


def render(document: dict[str, Any], lang: Lang) -> str:
    """The feedback profile as one printable HTML page in ``lang``."""
    catalog = load_catalog()

    def shown(indicator: dict[str, Any], key: str) -> str:
        return formatter(indicator["kind"], lang)(indicator[key])

    rules = [
        {
            **r,
            "title": catalog.rule(r["rule_id"]).titles[lang],
            "why": (w := catalog.rule(r["rule_id"]).why) and w[lang],
            "legal_basis": catalog.rule(r["rule_id"]).legal_basis,
            "share": r["lines"] / document["lines"] if document["lines"] else 0.0,
        }
        for r in document["rules"]
    ]
    return documents.render(
        "profile.html", lang, d=document, rules=rules, shown=shown, chart=lambda indicator: chart(indicator, lang)
    )


def kind_of(feature: str) -> str:
    """How a profile indicator is written: a share, an amount or a level."""
    return "share" if feature in SHARES else "amount" if feature in AMOUNTS else "level"


def formatter(kind: str, lang: Lang) -> Callable[[float], str]:
    """How a value of ``kind`` (:func:`kind_of`) is written in ``lang``."""
    if kind == "share":
        return lambda v: formats.percent(v, lang)
    if kind == "amount":
        return lambda v: formats.amount(v, lang)
    return lambda v: formats.number(v, lang, 1)


def chart(indicator: dict[str, Any], lang: Lang) -> str:
    """The peers' values as a histogram, the peers' median dashed and the provider's value as
    a dark line: an inline SVG a browser prints sharply.

    The peers' part is the same for every member of a peer group, so it is drawn once per
    group, indicator and language (``_peer_chart``); each provider's line is then placed on
    it by the chart's own scale."""
    svg, scale = _peer_chart(tuple(indicator["peer_values"]), indicator["peer_median"], indicator["kind"], lang)
    x = scale[0] + scale[1] * indicator["value"]
    marker = (
        f'<line x1="{x:.2f}" x2="{x:.2f}" y1="{scale[2]:.2f}" y2="{scale[3]:.2f}" '
        'stroke="#1f4e79" stroke-width="2.2" class="provider"/>'
    )
    end = svg.rindex("</svg>")
    return svg[:end] + marker + svg[end:]


@lru_cache(maxsize=4096)
def _peer_chart(
    values: tuple[float, ...], median: float, kind: str, lang: Lang
) -> tuple[str, tuple[float, float, float, float]]:
    """The peers' histogram and median as SVG, and how to place a value on it: ``x = a + b *
    value`` in the SVG's units, from ``y_top`` to ``y_bottom`` (the axes' height)."""
    import matplotlib  # only where a page is drawn: the command line starts faster without it
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    peers = np.array(values)
    # At 72 dots per inch, the figure's coordinates are the SVG's points. Fixed margins and
    # one filled outline for the bars draw it three times faster than tight_layout and a
    # patch per bar.
    figure = Figure(figsize=(3.4, 0.95), dpi=72)
    figure.subplots_adjust(left=0.03, right=0.97, bottom=0.3, top=0.97)
    axis = figure.add_subplot()
    if len(peers):
        counts, edges = np.histogram(peers, bins=min(30, max(5, len(peers) // 4)))
        axis.stairs(counts, edges, fill=True, color="#c9d6e3")
    axis.axvline(median, color="#6b7c8f", linestyle="--", linewidth=1)
    show = formatter(kind, lang)
    axis.xaxis.set_major_locator(MaxNLocator(4))
    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: show(v)))
    axis.set_yticks([])
    for side in ("top", "right", "left"):
        axis.spines[side].set_visible(False)
    axis.tick_params(axis="x", labelsize=7)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "secm"}):  # text as text, stable ids
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    height = figure.get_figheight() * 72
    (x0, _), (x1, _) = axis.transData.transform([(0.0, 0.0), (1.0, 0.0)])
    box = axis.get_window_extent()
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :], (float(x0), float(x1 - x0), float(height - box.y1), float(height - box.y0))

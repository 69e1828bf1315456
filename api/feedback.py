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

import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa

from api import documents, formats
from api import tables as t
from api.charts import charts
from api.formats import Lang
from api.queries import NotPublished, flags_by_rule, published_run
from detectors.indicators import GROUPS, SHARES
from detectors.profiles import CHANNEL_LINES, period_bounds
from rules import load_catalog
from rules.catalog import DeadlineCheck

LATE_RULE = "LATE_ATTESTATION"
AMOUNTS = ("amount_per_patient",)
INDICATORS = tuple(feature for members in GROUPS.values() for feature in members)
PEER_GROUPS_KEPT = 256
_peers: OrderedDict[tuple[str, str, str, str], dict[str, np.ndarray]] = OrderedDict()
_peers_lock = threading.Lock()


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
    peers = peer_values(connection, run, chosen, row["peer_group"])
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
        "peer_group": row["peer_group"],
        "peer_level": len(row["peer_group"].split("|")) if row["peer_group"] != "all" else 0,
        "peers": row["peer_group_size"],
        "indicators": [_indicator(feature, profile, peers[feature]) for feature in INDICATORS],
        "channels": _channels(profile, late, legislation),
        "rules": [
            {"rule_id": r["rule_id"], "lines": int(r["lines"]), "amount_eur": round(float(r["amount_at_stake_eur"]), 2)}
            for r in by_rule
        ],
    }


def peer_values(connection: sa.Connection, run: str, period: str, group: str) -> dict[str, np.ndarray]:
    """Each indicator's values over the members of a peer group in a period of a run (empty
    when the group has none). What a published run says never changes, so the last groups
    asked for are kept: the other members' pages and charts do not read them again."""
    key = (str(connection.engine.url), run, period, group)
    with _peers_lock:
        if key in _peers:
            _peers.move_to_end(key)
            return _peers[key]
    ps = t.provider_scores.c
    profiles = [
        json.loads(p)
        for p in connection.execute(
            sa.select(ps.profile).where(ps.run_id == run, ps.period == period, ps.peer_group == group)
        ).scalars()
    ]
    values = {feature: np.array([float(p.get(feature) or 0.0) for p in profiles]) for feature in INDICATORS}
    with _peers_lock:
        _peers[key] = values
        while len(_peers) > PEER_GROUPS_KEPT:
            _peers.popitem(last=False)
    return values


def _indicator(feature: str, profile: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """One indicator against the peers: value, median, share of peers below (ties count half)."""
    value = float(profile.get(feature) or 0.0)
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
        return formats.formatter(indicator["kind"], lang)(indicator[key])

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
        "profile.html", lang, d=document, rules=rules, shown=shown, svgs=charts(document["indicators"], lang)
    )


def kind_of(feature: str) -> str:
    """How a profile indicator is written: a share, an amount or a level."""
    return "share" if feature in SHARES else "amount" if feature in AMOUNTS else "level"

"""A provider's case narrative: what a run found, in a few plain sentences for the case file.

Every sentence is generated from published figures (flags per rule, the latest period's peer
comparison and its persistence), never from free text, so that two inspectors get the same
words for the same facts, in French, Dutch or English. A peer comparison names only what the
score's explanation names (contributions beyond chance, at most three).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from api import documents, formats
from api import tables as t
from api.feedback import kind_of
from api.formats import Lang, formatter
from api.queries import NotPublished, flags_by_rule, published_run
from detectors.indicators import NAMED_FROM, TOP_FEATURES
from rules import load_catalog


def named_contributions(contributions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a score's explanation names: contributions beyond chance, at most three. A model of
    the zoo explains by robust z instead (no contributions): only "higher than peers" counts,
    as its square."""
    worth = [c.get("contribution", max(float(c.get("robust_z") or 0.0), 0.0) ** 2) for c in contributions]
    return [c for c, w in zip(contributions, worth, strict=True) if w >= NAMED_FROM][:TOP_FEATURES]


def case_facts(connection: sa.Connection, nihdi: str, run_id: str | None = None) -> dict[str, Any]:
    """What a run says of a provider, for the narrative; ``NotPublished`` when it says nothing."""
    run = published_run(connection, run_id)
    ps = t.provider_scores.c
    latest = t.first_record(
        connection.execute(
            sa.select(ps.period, ps.peer_group_size, ps.contributions, ps.top_decile_streak, ps.profile)
            .where(ps.run_id == run, ps.provider_nihdi == nihdi)
            .order_by(ps.period.desc())
            .limit(1)
        )
    )
    # The rules by amount at stake, the largest first.
    rules = sorted(flags_by_rule(connection, run, nihdi), key=lambda r: -float(r["amount_at_stake_eur"]))
    if latest is None and not rules:
        raise NotPublished(f"Provider {nihdi} is not in run {run}")
    created = connection.execute(sa.select(t.runs.c.created_at).where(t.runs.c.run_id == run)).scalar_one()
    profile = json.loads(latest["profile"]) if latest else {}
    named = named_contributions(json.loads(latest["contributions"]) if latest else [])
    return {
        "run_id": run,
        "run_date": created.date(),
        "provider_nihdi": nihdi,
        "profession": profile.get("profession"),
        "region": profile.get("region"),
        "rules": [{**r, "amount_eur": float(r["amount_at_stake_eur"])} for r in rules],
        "period": latest and latest["period"],
        "peers": latest and latest["peer_group_size"],
        "named": named,
        "streak": latest["top_decile_streak"] if latest else 0,
    }


def narrative(facts: dict[str, Any], lang: Lang) -> list[str]:
    """The facts as sentences in ``lang``."""
    words = documents.texts()[lang]
    n = words["narrative"]
    catalog = load_catalog()
    profession = words["professions"].get(facts["profession"] or "", facts["profession"] or "?")
    region = words["regions"].get(facts["region"] or "", facts["region"] or "?")
    lines = sum(r["lines"] for r in facts["rules"])
    base = {"nihdi": facts["provider_nihdi"], "profession": profession, "region": region}
    base["date"] = formats.day(facts["run_date"], lang)
    if not lines:
        sentences = [n["nothing"].format(**base)]
    else:
        amount = formats.amount(sum(r["amount_eur"] for r in facts["rules"]), lang)
        sentences = [
            n["flagged"].format(**base, lines=formats.number(lines, lang), rules=len(facts["rules"]), amount=amount)
        ]
    for r in facts["rules"]:
        rule = catalog.rule(r["rule_id"])
        sentences.append(
            n["rule"].format(
                title=rule.titles[lang],
                lines=formats.number(r["lines"], lang),
                first=formats.day(r["first"], lang),
                last=formats.day(r["last"], lang),
                amount=formats.amount(r["amount_eur"], lang),
                legal_basis=rule.legal_basis,
            )
        )
    if facts["period"] is not None:
        peers = {"period": facts["period"], "peers": formats.number(facts["peers"], lang)}
        if facts["named"]:
            parts = []
            for c in facts["named"]:
                show = formatter(kind_of(c["feature"]), lang)
                expected = c.get("expected")
                part = n["feature"].format(
                    feature=words["features"][c["feature"]].lower(),
                    value=show(c["value"]),
                    median=show(c["peer_median"]),
                    expected=""
                    if expected is None
                    else n["expected"].format(
                        # Runs published before trade-offs had only the patient mix to expect from.
                        expected=show(expected),
                        basis=n["expected_for"][c.get("expected_for") or "patients"],
                    ),
                    share=formats.percent(c["peer_percentile"], lang, 0),
                )
                parts.append(part)
            sentences.append(n["outlier"].format(**peers, features="; ".join(parts)))
        else:
            sentences.append(n["usual"].format(**peers))
        if facts["streak"] >= 2:
            sentences.append(n["persistent"].format(periods=facts["streak"]))
        elif facts["streak"] == 1:
            sentences.append(n["once"])
    return sentences

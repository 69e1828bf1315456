"""The inspectors' worklist: flagged providers, a provider's profile and the claim lines behind it."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query

from api import tables as t
from api.auth import audit
from api.dependencies import NIHDI, Answer, Page, PageSize, RuleId, RunId, Session, allow
from api.queries import count, matching, page_of, provider_in_run, rows, run_of

router = APIRouter(prefix="/providers", tags=["providers"])


@router.get("/flagged")
def flagged(
    session: Annotated[Session, Depends(allow("inspector", "data_scientist"))],
    run_id: RunId = None,
    rule: Annotated[RuleId | None, Query(description="Only providers flagged by this rule.")] = None,
    profession: Annotated[str | None, Query(max_length=32)] = None,
    region: Annotated[str | None, Query(max_length=8)] = None,
    insurer: Annotated[str | None, Query(pattern=r"^\d{3}$", description="Insurer (OA) code.")] = None,
    year: Annotated[int | None, Query(ge=1990, le=2100, description="Service year of the flags.")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    min_amount: Annotated[float | None, Query(ge=0, le=1e12)] = None,
    min_persistence: Annotated[
        int | None,
        Query(
            ge=0,
            le=100,
            description="Only providers in the top decile of scores for at least this many "
            "consecutive periods, up to their latest.",
        ),
    ] = None,
    sort: Literal["amount", "score", "lines", "persistence", "provider"] = "amount",
    order: Literal["desc", "asc"] = "desc",
    page: Page = 1,
    page_size: PageSize = 50,
) -> Answer:
    """Providers of a run by amount at stake, score or flagged lines, with filters."""
    fp = t.flagged_providers
    with session.begin() as connection:
        run = run_of(connection, run_id)
        where = [fp.c.run_id == run, *matching(fp, profession=profession, region=region)]
        if rule is not None:
            by_rule = sa.select(t.provider_rules.c.provider_nihdi).where(
                t.provider_rules.c.run_id == run, t.provider_rules.c.rule_id == rule.value
            )
            where.append(fp.c.provider_nihdi.in_(by_rule))
        for column, value in (("insurers", insurer), ("years", year)):
            if value is not None:
                where.append(fp.c[column].like(f"%,{value},%"))
        if min_score is not None:
            where.append(fp.c.score >= min_score)
        if min_amount is not None:
            where.append(fp.c.amount_at_stake_eur >= min_amount)
        if min_persistence is not None:
            where.append(fp.c.persistence >= min_persistence)
        keys = {
            "amount": [fp.c.amount_at_stake_eur],
            "score": [fp.c.score],
            "lines": [fp.c.lines_flagged],
            "persistence": [fp.c.persistence, fp.c.score],
            "provider": [fp.c.provider_nihdi],
        }[sort]
        ordering = [(k.desc() if order == "desc" else k.asc()).nulls_last() for k in keys]
        # Counting is the costly part of a page, and a published run never changes.
        filters = ("flagged", run, rule, profession, region, insurer, year, min_score, min_amount, min_persistence)
        total = session.remembered(filters, lambda: count(connection, fp, where))
        found = rows(connection, fp, where, [*ordering, fp.c.provider_nihdi], page, page_size)
    items = [
        {
            **{k: v for k, v in row.items() if k not in ("run_id", "rules", "insurers", "years")},
            **{k: [v for v in row[k].split(",") if v] for k in ("rules", "insurers", "years")},
        }
        for row in found
    ]
    return Answer(page_of(total, page, page_size, items, run_id=run))


@router.get("/{nihdi}")
def provider(
    session: Annotated[Session, Depends(allow("inspector", "data_scientist"))],
    nihdi: Annotated[str, NIHDI],
    run_id: RunId = None,
) -> Answer:
    """A provider's profile, peer comparison, score with explanation, and flags per rule."""
    with session.begin() as connection:
        run = run_of(connection, run_id)
        summary = provider_in_run(connection, run, nihdi)
        periods = t.records(
            connection.execute(
                sa.select(t.provider_scores)
                .where(t.provider_scores.c.run_id == run, t.provider_scores.c.provider_nihdi == nihdi)
                .order_by(t.provider_scores.c.period)
            )
        )
        by_rule = t.records(
            connection.execute(
                sa.select(
                    t.flags.c.rule_id,
                    sa.func.count().label("lines"),
                    sa.func.sum(t.flags.c.amount_at_stake_eur).label("amount_at_stake_eur"),
                    sa.func.min(t.flags.c.legal_basis).label("legal_basis"),
                )
                .where(t.flags.c.run_id == run, t.flags.c.provider_nihdi == nihdi)
                .group_by(t.flags.c.rule_id)
                .order_by(t.flags.c.rule_id)
            )
        )
        cases = (
            t.records(
                connection.execute(
                    sa.select(t.cases.c.id, t.cases.c.status, t.cases.c.outcome).where(
                        t.cases.c.provider_nihdi == nihdi
                    )
                )
            )
            if session.caller.role in ("inspector", "admin")
            else None
        )
    answer: dict[str, Any] = {
        "run_id": run,
        "provider_nihdi": nihdi,
        **{
            k: summary[k]
            for k in ("profession", "region", "lines_flagged", "amount_at_stake_eur", "score", "rank", "persistence")
        },
        "periods": [
            {
                **{
                    k: p[k]
                    for k in (
                        "period",
                        "peer_group",
                        "peer_group_size",
                        "score",
                        "rank",
                        "explanation",
                        "top_decile_streak",
                    )
                },
                "peer_comparison": json.loads(p["contributions"]),
                "profile": json.loads(p["profile"]),
            }
            for p in periods
        ],
        "flags_by_rule": [{**r, "amount_at_stake_eur": round(float(r["amount_at_stake_eur"]), 2)} for r in by_rule],
    }
    if cases is not None:
        answer["cases"] = cases
    return Answer(answer)


@router.get("/{nihdi}/claims")
def claims(
    session: Annotated[Session, Depends(allow("inspector"))],
    nihdi: Annotated[str, NIHDI],
    run_id: RunId = None,
    rule: Annotated[RuleId | None, Query(description="Only the lines of this rule.")] = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> Answer:
    """The flagged claim lines behind a provider's flags, with their evidence (audited)."""
    with session.begin() as connection:
        run = run_of(connection, run_id)
        where = [t.flags.c.run_id == run, t.flags.c.provider_nihdi == nihdi]
        if rule:
            where.append(t.flags.c.rule_id == rule.value)
        provider_in_run(connection, run, nihdi)
        total = count(connection, t.flags, where)
        found = rows(connection, t.flags, where, [t.flags.c.rule_id, t.flags.c.claim_id], page, page_size)
        items = [
            {
                **{k: v for k, v in r.items() if k not in ("id", "run_id", "evidence")},
                "evidence": json.loads(r["evidence"]),
            }
            for r in found
        ]
        audit(
            connection,
            session.caller,
            "read_claims",
            provider_nihdi=nihdi,
            detail={
                "run_id": run,
                "rule": rule and rule.value,
                "page": page,
                "claims": [i["claim_id"] for i in items],
            },
        )
    return Answer(page_of(total, page, page_size, items, run_id=run))

"""The inspectors' worklist: flagged providers, a provider's profile and the claim lines behind it."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from api import tables as t
from api.auth import audit
from api.dependencies import NIHDI, PROVIDER, Answer, Page, PageSize, RuleId, RunId, Session, allow, rendered_page
from api.documents import language_of
from api.feedback import feedback_profile, render
from api.formats import Lang
from api.hardening import DOCUMENT_POLICY
from api.narrative import case_facts, narrative
from api.pseudonyms import PREFIX as PSEUDONYM_PREFIX
from api.queries import count, flags_by_rule, page_of, provider_in_run, read_purpose, rows
from api.worklist import Filters, Worklist

router = APIRouter(prefix="/providers", tags=["providers"])


@router.get("/flagged")
async def flagged(
    session: Annotated[Session, Depends(allow("inspector", "data_scientist"))],
    run_id: RunId = None,
    rule: Annotated[RuleId | None, Query(description="Only providers flagged by this rule.")] = None,
    profession: Annotated[str | None, Query(max_length=32)] = None,
    region: Annotated[str | None, Query(max_length=8)] = None,
    insurer: Annotated[str | None, Query(pattern=r"^[0-9]{3}$", description="Insurer (OA) code.")] = None,
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
) -> Response:
    """Providers of a run by amount at stake, score or flagged lines, with filters."""
    filters = Filters(
        rule=rule and rule.value,
        profession=profession,
        region=region,
        insurer=insurer,
        year=year,
        min_score=min_score,
        min_amount=min_amount,
        min_persistence=min_persistence,
    )
    run, worklist = await worklist_of(session, run_id)
    # Answered on the event loop: a page from memory costs less than a hop to a thread.
    total, items = worklist.page(filters, sort, order, page, page_size)
    return rendered_page(total, page, page_size, items, run_id=run)


async def worklist_of(session: Session, run_id: str | None) -> tuple[str, Worklist]:
    """The run asked for (default: the newest; 404 if unknown) and its worklist as the caller
    may see it (by pseudonym for a data scientist), read if this process has not yet."""
    run = run_id or session.newest_run
    worklist = session.worklists.held(run) if run else None
    if worklist is None:  # the database says which run, and what it holds
        read: tuple[str, Worklist] = await run_in_threadpool(_worklist, session, run_id)
        run, worklist = read
    if session.pseudonymous:
        worklist = worklist.pseudonymised(session.pseudonym_key)
    return str(run), worklist


def _worklist(session: Session, run_id: str | None) -> tuple[str, Worklist]:
    """The run asked for (404 if unknown) and its worklist, read if this process has not yet."""
    with session.read() as connection:
        run = session.run(connection, run_id)
        return run, session.worklists.of(connection, run)


@router.get("/{nihdi}")
def provider(
    session: Annotated[Session, Depends(allow("inspector", "data_scientist"))],
    nihdi: Annotated[str, PROVIDER],
    run_id: RunId = None,
) -> Answer:
    """A provider's profile, peer comparison, score with explanation, and flags per rule; by
    number or pseudonym (a data scientist gives and sees the pseudonym only)."""
    return Answer(provider_view(session, nihdi, run_id))


def provider_view(session: Session, asked: str, run_id: str | None) -> dict[str, Any]:
    """What a run says of a provider, as the caller may see it: by number or pseudonym (a data
    scientist's number is a 404 like any provider the run does not know), with its cases for
    an inspector."""
    with session.read() as connection:
        run = session.run(connection, run_id)
        worklist = session.worklists.of(connection, run)
        nihdi = asked
        if session.pseudonymous or asked.startswith(PSEUDONYM_PREFIX):
            nihdi = worklist.pseudonymised(session.pseudonym_key).numbers.get(asked, "")
        answer: dict[str, Any] = worklist.remembered(nihdi, lambda: _in_run(connection, run, nihdi, asked, worklist))
        if session.pseudonymous:
            return {**answer, "provider_nihdi": asked}
        if session.caller.role not in ("inspector", "admin"):
            return answer
        c = t.cases.c
        cases = t.records(connection.execute(sa.select(c.id, c.status, c.outcome).where(c.provider_nihdi == nihdi)))
    return {**answer, "cases": cases}


def _in_run(connection: sa.Connection, run: str, nihdi: str, asked: str, worklist: Worklist) -> dict[str, Any]:
    """What a run says of a provider (all but its cases, which change); 404 if it does not
    know it (said of the number or pseudonym ``asked``)."""
    summary = worklist.provider(nihdi)
    if summary is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Provider {asked} is not in run {run}")
    ps = t.provider_scores.c
    periods = t.records(
        connection.execute(
            sa.select(t.provider_scores).where(ps.run_id == run, ps.provider_nihdi == nihdi).order_by(ps.period)
        )
    )
    by_rule = flags_by_rule(connection, run, nihdi)
    shown = ("period", "peer_group", "peer_group_size", "score", "rank", "explanation", "top_decile_streak")
    return {
        "run_id": run,
        "provider_nihdi": nihdi,
        **{
            k: summary[k]
            for k in ("profession", "region", "lines_flagged", "amount_at_stake_eur", "score", "rank", "persistence")
        },
        "periods": [
            {
                **{k: p[k] for k in shown},
                "peer_comparison": json.loads(p["contributions"]),
                "profile": json.loads(p["profile"]),
            }
            for p in periods
        ],
        "flags_by_rule": [
            {
                "rule_id": r["rule_id"],
                "lines": r["lines"],
                "amount_at_stake_eur": round(float(r["amount_at_stake_eur"]), 2),
                "legal_basis": r["legal_basis"],
            }
            for r in by_rule
        ],
    }


@router.get("/{nihdi}/profile", response_class=HTMLResponse)
def feedback(
    session: Annotated[Session, Depends(allow("inspector"))],
    nihdi: Annotated[str, NIHDI],
    run_id: RunId = None,
    period: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{4}(Q[1-4])?$", description="A year or quarter (2024, 2024Q2); default: the latest."),
    ] = None,
    lang: Annotated[Lang | None, Query(description="fr, nl or en; default: from the provider's region.")] = None,
) -> HTMLResponse:
    """The provider's feedback profile, written for them: a printable HTML page."""
    with session.read() as connection:
        document = feedback_profile(connection, nihdi, run_id, period)
    page = render(document, lang or language_of(document["region"]))
    return HTMLResponse(page, headers={"Content-Security-Policy": DOCUMENT_POLICY})


@router.get("/{nihdi}/narrative")
def case_narrative(
    session: Annotated[Session, Depends(allow("inspector"))],
    nihdi: Annotated[str, NIHDI],
    run_id: RunId = None,
    lang: Annotated[Lang | None, Query(description="fr, nl or en; default: from the provider's region.")] = None,
) -> dict[str, Any]:
    """A short plain-language summary for the case file, generated from the run's flags,
    peer comparison and persistence."""
    with session.read() as connection:
        facts = case_facts(connection, nihdi, run_id)
    chosen = lang or language_of(facts["region"])
    sentences = narrative(facts, chosen)
    return {
        "run_id": facts["run_id"],
        "provider_nihdi": nihdi,
        "lang": chosen,
        "text": " ".join(sentences),
        "sentences": sentences,
    }


@router.get("/{nihdi}/claims")
def claims(
    session: Annotated[Session, Depends(allow("inspector"))],
    nihdi: Annotated[str, NIHDI],
    run_id: RunId = None,
    rule: Annotated[RuleId | None, Query(description="Only the lines of this rule.")] = None,
    case_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="The case of this provider you work on: why you read.")
    ] = None,
    purpose: Annotated[
        str | None, Query(min_length=10, max_length=500, description="Before a case exists: why you read.")
    ] = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> Answer:
    """The flagged claim lines behind a provider's flags, with their evidence, read for a case
    or a stated purpose (audited with it)."""
    return Answer(claim_lines(session, nihdi, run_id, rule and rule.value, case_id, purpose, page, page_size))


def claim_lines(
    session: Session,
    nihdi: str,
    run_id: str | None,
    rule: str | None,
    case_id: int | None,
    purpose: str | None,
    page: int,
    page_size: int,
) -> dict[str, Any]:
    """A page of a provider's flagged lines with their evidence, read for a case or a stated
    purpose (403 without either) and audited with it."""
    with session.begin() as connection:
        read_purpose(connection, session.caller, nihdi, case_id, purpose)
        run = session.run(connection, run_id)
        where = [t.flags.c.run_id == run, t.flags.c.provider_nihdi == nihdi]
        if rule:
            where.append(t.flags.c.rule_id == rule)
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
            case_id=case_id,
            detail={
                "purpose": purpose,
                "run_id": run,
                "rule": rule,
                "page": page,
                "claims": [i["claim_id"] for i in items],
            },
        )
    return page_of(total, page, page_size, items, run_id=run)

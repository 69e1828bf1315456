"""The reads the endpoints (and any page built on them) share, on an open connection."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException, status

from api import tables as t
from api.auth import Caller


def matching(table: sa.Table, **values: object) -> list[sa.ColumnElement[bool]]:
    """Equality filters on ``table`` for the values given (a missing or empty one filters nothing)."""
    return [table.c[column] == value for column, value in values.items() if value]


_COMPLETE = sa.select(t.runs.c.run_id).where(t.runs.c.status == "complete")
# The newest complete run, as a scalar any statement can read along (the token's does).
NEWEST_RUN = _COMPLETE.order_by(t.runs.c.published_at.desc()).limit(1).scalar_subquery().label("newest_run")


def run_of(connection: sa.Connection, run_id: str | None, newest: str | None = None) -> str:
    """The requested run, or the newest complete one (``newest`` if already read); 404 when
    there is none."""
    if run_id:
        found = connection.execute(_COMPLETE.where(t.runs.c.run_id == run_id)).scalar()
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No published run '{run_id}'")
        return str(found)
    newest = newest or connection.execute(sa.select(NEWEST_RUN)).scalar()
    if newest is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run has been published yet (see secm run)")
    return str(newest)


class NotPublished(ValueError):
    """The run, the provider or the period asked for is not in the published runs."""


def published_run(connection: sa.Connection, run_id: str | None) -> str:
    """:func:`run_of` for work outside a request (documents, the command line): a
    ``NotPublished`` error that says why, instead of a 404."""
    try:
        return run_of(connection, run_id)
    except HTTPException as exc:
        raise NotPublished(exc.detail) from None


def page_of(total: int, number: int, size: int, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One page of a list, as every list endpoint answers it."""
    return {**extra, "page": number, "page_size": size, "total": total, "items": items}


def count(connection: sa.Connection, table: sa.Table, where: list[Any]) -> int:
    return int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def rows(
    connection: sa.Connection,
    table: sa.Table,
    where: list[Any],
    order: list[Any],
    number: int,
    size: int,
    leave_out: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Page ``number`` of ``table``'s rows matching ``where``, in ``order``, without the
    columns named in ``leave_out``."""
    columns = [c for c in table.c if c.name not in leave_out]
    query = sa.select(*columns).where(*where).order_by(*order).limit(size).offset((number - 1) * size)
    return t.records(connection.execute(query))


def listing(
    connection: sa.Connection,
    table: sa.Table,
    where: list[Any],
    order: list[Any],
    number: int,
    size: int,
    leave_out: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Page ``number`` of ``table``'s rows matching ``where``, with how many match in all."""
    found = rows(connection, table, where, order, number, size, leave_out)
    return page_of(count(connection, table, where), number, size, found)


def provider_in_run(connection: sa.Connection, run: str, nihdi: str) -> dict[str, Any]:
    """The provider's summary in ``run``; 404 when the run does not know the provider."""
    fp = t.flagged_providers
    row = t.first_record(connection.execute(sa.select(fp).where(fp.c.run_id == run, fp.c.provider_nihdi == nihdi)))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Provider {nihdi} is not in run {run}")
    return row


def case_with_history(connection: sa.Connection, case_id: int) -> dict[str, Any]:
    """A case, every change it went through, the actions taken on it and the money recovered
    on it; 404 when there is no such case."""
    row = t.first_record(connection.execute(sa.select(t.cases).where(t.cases.c.id == case_id)))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No case {case_id}")
    events = t.records(
        connection.execute(
            sa.select(t.case_events.c.author, t.case_events.c.at, t.case_events.c.change)
            .where(t.case_events.c.case_id == case_id)
            .order_by(t.case_events.c.id)
        )
    )
    a = t.case_actions.c
    actions = t.records(
        connection.execute(
            sa.select(a.action, a.taken_on, a.author, a.amount_eur, a.note)
            .where(a.case_id == case_id)
            .order_by(a.taken_on, a.id)
        )
    )
    r = t.case_recoveries.c
    recoveries = t.records(
        connection.execute(
            sa.select(r.amount_eur, r.received_on, r.author, r.note)
            .where(r.case_id == case_id)
            .order_by(r.received_on, r.id)
        )
    )
    recovered = round(sum(float(x["amount_eur"]) for x in recoveries), 2)
    return {**row, "history": events, "actions": actions, "recoveries": recoveries, "amount_recovered_eur": recovered}


def flags_by_rule(connection: sa.Connection, run: str, nihdi: str, *where: Any) -> list[dict[str, Any]]:
    """Per rule, a provider's flagged lines in ``run`` (and ``where``): how many, the amount at
    stake, the legal basis, and the first and last date of service."""
    f = t.flags.c
    return t.records(
        connection.execute(
            sa.select(
                f.rule_id,
                sa.func.count().label("lines"),
                sa.func.sum(f.amount_at_stake_eur).label("amount_at_stake_eur"),
                sa.func.min(f.legal_basis).label("legal_basis"),
                sa.func.min(f.service_date).label("first"),
                sa.func.max(f.service_date).label("last"),
            )
            .where(f.run_id == run, f.provider_nihdi == nihdi, *where)
            .group_by(f.rule_id)
            .order_by(f.rule_id)
        )
    )


def decision_record(connection: sa.Connection, run: str, nihdi: str) -> dict[str, Any]:
    """What a run said of a provider when a case was opened on it, to be kept with the case
    whatever later runs say: the run and its catalog and model versions, every flag (claim,
    rule, reason, amount, evidence) and every period's score and explanation."""
    info = connection.execute(sa.select(t.runs.c.info).where(t.runs.c.run_id == run)).scalar_one()
    f, ps = t.flags.c, t.provider_scores.c
    flags = t.records(
        connection.execute(
            sa.select(f.claim_id, f.rule_id, f.reason, f.amount_at_stake_eur, f.service_date, f.legal_basis, f.evidence)
            .where(f.run_id == run, f.provider_nihdi == nihdi)
            .order_by(f.rule_id, f.claim_id)
        )
    )
    scores = t.records(
        connection.execute(
            sa.select(ps.period, ps.peer_group, ps.peer_group_size, ps.score, ps.rank, ps.explanation, ps.contributions)
            .where(ps.run_id == run, ps.provider_nihdi == nihdi)
            .order_by(ps.period)
        )
    )
    return {
        "run_id": run,
        "legislation": info.get("legislation"),
        "catalog_version": info.get("catalog_version"),
        "model": info.get("detector", {}),
        "flags": [
            {**r, "service_date": r["service_date"].isoformat(), "evidence": json.loads(r["evidence"])} for r in flags
        ],
        "scores": [{**s, "contributions": json.loads(s["contributions"])} for s in scores],
    }


def read_purpose(
    connection: sa.Connection, caller: Caller, nihdi: str, case_id: int | None, purpose: str | None
) -> None:
    """Claim lines are read only within an inspection task (2021 amendment, art. 41): a case
    of this provider that the caller works on (opened or changed it; an admin may use any), or,
    before a case exists, a stated purpose. 403 saying what is missing otherwise."""
    if case_id is None and purpose is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "Claim lines are read within an inspection task: give case_id (a case of this provider you "
            "work on) or, before a case exists, purpose (why, in a few words)",
        )
    if case_id is None:
        return
    c, e = t.cases.c, t.case_events.c
    case = t.first_record(connection.execute(sa.select(c.provider_nihdi, c.opened_by).where(c.id == case_id)))
    if case is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No case {case_id}")
    if case["provider_nihdi"] != nihdi:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Case {case_id} is not about provider {nihdi}")
    worked = connection.execute(
        sa.select(sa.func.count()).where(e.case_id == case_id, e.author == caller.name)
    ).scalar_one()
    if caller.role != "admin" and case["opened_by"] != caller.name and not worked:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"You do not work on case {case_id}")


def closed_outcomes() -> sa.Select[Any]:
    """Closed cases and their outcomes, oldest first."""
    c = t.cases.c
    return (
        sa.select(c.id, c.provider_nihdi, c.run_id, c.outcome, c.amount_to_recover_eur, c.closed_at)
        .where(c.status == "closed")
        .order_by(c.id)
    )


def _verdicts(*where: Any) -> sa.Subquery:
    """Per provider with a closed case (among ``where``): 1 when any was confirmed, else 0."""
    outcomes = closed_outcomes().where(*where).subquery()
    confirmed = sa.func.max(sa.case((outcomes.c.outcome == "confirmed", 1), else_=0))
    return (
        sa.select(outcomes.c.provider_nihdi, confirmed.label("confirmed"))
        .group_by(outcomes.c.provider_nihdi)
        .subquery()
    )


def verdicts(connection: sa.Connection) -> list[dict[str, Any]]:
    """Per provider with a closed case: ``confirmed`` when any of its cases was confirmed."""
    v = _verdicts()
    return t.records(connection.execute(sa.select(v).order_by(v.c.provider_nihdi)))


def rule_backtest(connection: sa.Connection, *where: Any) -> dict[str, dict[str, Any]]:
    """Per rule: providers it flagged in any published run that were investigated (a closed
    case, among ``where``), how many were confirmed, and the confirmed share (None when none)."""
    v = _verdicts(*where)
    pr = t.provider_rules.c
    flagged = (
        sa.select(pr.rule_id, pr.provider_nihdi)
        .join(t.runs, t.runs.c.run_id == pr.run_id)
        .where(t.runs.c.status == "complete")
        .distinct()
        .subquery()
    )
    rows = connection.execute(
        sa.select(flagged.c.rule_id, sa.func.count().label("investigated"), sa.func.sum(v.c.confirmed))
        .join(v, v.c.provider_nihdi == flagged.c.provider_nihdi)
        .group_by(flagged.c.rule_id)
    )
    return {
        str(rule): {"investigated": int(n), "confirmed": int(m or 0), "confirmed_share": round(int(m or 0) / n, 4)}
        for rule, n, m in rows
    }


NO_BACKTEST = {"investigated": 0, "confirmed": 0, "confirmed_share": None}

"""The inspectors' HTTP service: flagged providers, evidence, cases, access control and audit.

``create_app(database_url)`` builds the FastAPI application over the application database
(migrated on start). Every endpoint but ``/health`` needs a bearer token; each declares the
roles it serves. Reads of claim lines and every case change are written to the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from api import tables as t
from api.auth import ROLES, Caller, audit, caller_for
from api.claims import checker_for
from api.database import migrate
from api.report import annual_report
from data_contracts import ContractError
from rules import load_catalog

MAX_PAGE_SIZE = 200
NIHDI = Path(pattern=r"^\d{11}$", description="The provider's 11-digit NIHDI/RIZIV number.")
CASE_FLOW = {"open": {"investigating", "closed"}, "investigating": {"closed"}, "closed": set()}
OUTCOMES = ("confirmed", "unfounded")

# The shipped catalog's rule ids, so that the OpenAPI document lists the values a filter takes.
RuleId = Enum("RuleId", {rule.id: rule.id for rule in load_catalog()}, type=str)  # type: ignore[misc]

bearer = HTTPBearer(auto_error=False, description="A token from `secm token create`.")


def _connection(request: Request) -> Iterator[sa.Connection]:
    with request.app.state.engine.begin() as connection:
        yield connection


Connection = Annotated[sa.Connection, Depends(_connection)]


def allow(*roles: str) -> Callable[..., Caller]:
    """A dependency admitting a valid token of one of ``roles`` (admin is always admitted)."""

    def check(
        connection: Connection, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Caller:
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Missing bearer token", {"WWW-Authenticate": "Bearer"})
        caller = caller_for(connection, credentials.credentials)
        if caller is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "Invalid or revoked token", {"WWW-Authenticate": "Bearer"}
            )
        if caller.role != "admin" and caller.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"The role '{caller.role}' may not do this")
        return caller

    return check


def _run(connection: sa.Connection, run_id: str | None) -> str:
    """The requested run, or the newest complete one."""
    query = sa.select(t.runs.c.run_id).where(t.runs.c.status == "complete")
    if run_id:
        found = connection.execute(query.where(t.runs.c.run_id == run_id)).scalar()
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No published run '{run_id}'")
        return str(found)
    newest = connection.execute(query.order_by(t.runs.c.published_at.desc()).limit(1)).scalar()
    if newest is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No run has been published yet (see secm run)")
    return str(newest)


RunId = Annotated[str | None, Query(description="A published run; default: the newest.", max_length=64)]
Page = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page, at most {MAX_PAGE_SIZE}.")]


class CaseOpen(BaseModel):
    provider_nihdi: str = Field(pattern=r"^\d{11}$")
    notes: str = Field(default="", max_length=10_000)
    run_id: str | None = Field(default=None, max_length=64)


class ClaimsCheck(BaseModel):
    """Contract-shaped records: dates ``YYYY-MM-DD``, times ``HH:MM[:SS]``, datetimes ISO."""

    lines: list[dict[str, Any]] = Field(min_length=1, max_length=2_000)
    invoices: list[dict[str, Any]] = Field(default_factory=list, max_length=2_000)


class CaseChange(BaseModel):
    status: Literal["open", "investigating", "closed"] | None = None
    outcome: Literal["confirmed", "unfounded"] | None = None
    amount_to_recover_eur: float | None = Field(default=None, ge=0, le=1e12)
    notes: str | None = Field(default=None, max_length=10_000)


def _invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message, "input": None}])


def _page(total: int, page: int, page_size: int, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {**extra, "page": page, "page_size": page_size, "total": total, "items": items}


def _count(connection: sa.Connection, table: sa.Table, where: list[Any]) -> int:
    return int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def _rows(
    connection: sa.Connection, table: sa.Table, where: list[Any], order: list[Any], page: int, page_size: int
) -> list[dict[str, Any]]:
    """One page of ``table``'s rows matching ``where``, in ``order``."""
    query = sa.select(table).where(*where).order_by(*order).limit(page_size).offset((page - 1) * page_size)
    return [dict(r) for r in connection.execute(query).mappings()]


def _provider_in_run(connection: sa.Connection, run: str, nihdi: str) -> dict[str, Any]:
    """The provider's summary in ``run``; 404 when the run does not know the provider."""
    fp = t.flagged_providers
    row = connection.execute(sa.select(fp).where(fp.c.run_id == run, fp.c.provider_nihdi == nihdi)).mappings().first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Provider {nihdi} is not in run {run}")
    return dict(row)


def _case(connection: sa.Connection, case_id: int) -> dict[str, Any]:
    row = connection.execute(sa.select(t.cases).where(t.cases.c.id == case_id)).mappings().first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No case {case_id}")
    events = connection.execute(
        sa.select(t.case_events.c.author, t.case_events.c.at, t.case_events.c.change)
        .where(t.case_events.c.case_id == case_id)
        .order_by(t.case_events.c.id)
    ).mappings()
    return {**row, "history": [dict(e) for e in events]}


def create_app(database_url: str) -> FastAPI:
    app = FastAPI(
        title="secm",
        summary="Billing control for the Belgian health insurance: flagged providers, evidence, cases.",
        version="0.1.0",
        responses={
            401: {"description": "Missing, invalid or revoked bearer token"},
            403: {"description": "The token's role may not use this endpoint"},
            404: {"description": "Unknown run, provider or case"},
            409: {"description": "A case change the case's state does not allow"},
        },
    )
    app.state.engine = migrate(database_url)
    catalog = load_catalog()
    # A published run never changes, so the number of providers matching a filter can be
    # remembered: counting is the costly part of a page of the list.
    counts: dict[tuple[Any, ...], int] = {}

    def count_flagged(key: tuple[Any, ...], count: Callable[[], int]) -> int:
        if key not in counts:
            if len(counts) > 10_000:
                counts.clear()
            counts[key] = count()
        return counts[key]

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness; needs no token."""
        return {"status": "ok"}

    @app.get("/rules", tags=["reference"])
    def rules(_: Annotated[Caller, Depends(allow(*ROLES))]) -> list[dict[str, Any]]:
        """The rule catalog: titles, legal basis, severity and parameters per legislation."""
        return [
            {
                "rule_id": rule.id,
                "titles": rule.titles.model_dump(),
                "legal_basis": rule.legal_basis,
                "description": rule.description,
                "severity": rule.severity,
                "parameters": {name: rule.parameters_for(name) for name in catalog.legislations},
            }
            for rule in catalog
        ]

    @app.get("/runs", tags=["reference"])
    def runs(connection: Connection, _: Annotated[Caller, Depends(allow(*ROLES))]) -> list[dict[str, Any]]:
        """Published runs, newest first, with their per-rule figures."""
        rows = connection.execute(
            sa.select(t.runs).where(t.runs.c.status == "complete").order_by(t.runs.c.published_at.desc())
        ).mappings()
        return [
            {**{k: v for k, v in row.items() if k != "info"}, "rules": row["info"].get("rules", {})} for row in rows
        ]

    @app.get("/providers/flagged", tags=["providers"])
    def flagged(
        connection: Connection,
        _: Annotated[Caller, Depends(allow("inspector", "data_scientist"))],
        run_id: RunId = None,
        rule: Annotated[RuleId | None, Query(description="Only providers flagged by this rule.")] = None,
        profession: Annotated[str | None, Query(max_length=32)] = None,
        region: Annotated[str | None, Query(max_length=8)] = None,
        insurer: Annotated[str | None, Query(pattern=r"^\d{3}$", description="Insurer (OA) code.")] = None,
        year: Annotated[int | None, Query(ge=1990, le=2100, description="Service year of the flags.")] = None,
        min_score: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        min_amount: Annotated[float | None, Query(ge=0, le=1e12)] = None,
        sort: Literal["amount", "score", "lines", "provider"] = "amount",
        order: Literal["desc", "asc"] = "desc",
        page: Page = 1,
        page_size: PageSize = 50,
    ) -> dict[str, Any]:
        """Providers of a run by amount at stake, score or flagged lines, with filters."""
        fp = t.flagged_providers
        run = _run(connection, run_id)
        where = [fp.c.run_id == run]
        if rule is not None:
            by_rule = sa.select(t.provider_rules.c.provider_nihdi).where(
                t.provider_rules.c.run_id == run, t.provider_rules.c.rule_id == rule.value
            )
            where.append(fp.c.provider_nihdi.in_(by_rule))
        for column, value in (("insurers", insurer), ("years", year)):
            if value is not None:
                where.append(fp.c[column].like(f"%,{value},%"))
        if profession:
            where.append(fp.c.profession == profession)
        if region:
            where.append(fp.c.region == region)
        if min_score is not None:
            where.append(fp.c.score >= min_score)
        if min_amount is not None:
            where.append(fp.c.amount_at_stake_eur >= min_amount)
        key = {"amount": fp.c.amount_at_stake_eur, "score": fp.c.score, "lines": fp.c.lines_flagged}.get(
            sort, fp.c.provider_nihdi
        )
        ordering = key.desc() if order == "desc" else key.asc()
        filters = (run, rule, profession, region, insurer, year, min_score, min_amount)
        total = count_flagged(filters, lambda: _count(connection, fp, where))
        rows = _rows(connection, fp, where, [ordering.nulls_last(), fp.c.provider_nihdi], page, page_size)
        items = [
            {
                **{k: v for k, v in row.items() if k not in ("run_id", "rules", "insurers", "years")},
                **{k: [v for v in row[k].split(",") if v] for k in ("rules", "insurers", "years")},
            }
            for row in rows
        ]
        return _page(total, page, page_size, items, run_id=run)

    @app.get("/providers/{nihdi}", tags=["providers"])
    def provider(
        connection: Connection,
        caller: Annotated[Caller, Depends(allow("inspector", "data_scientist"))],
        nihdi: Annotated[str, NIHDI],
        run_id: RunId = None,
    ) -> dict[str, Any]:
        """A provider's profile, peer comparison, score with explanation, and flags per rule."""
        run = _run(connection, run_id)
        summary = _provider_in_run(connection, run, nihdi)
        periods = connection.execute(
            sa.select(t.provider_scores)
            .where(t.provider_scores.c.run_id == run, t.provider_scores.c.provider_nihdi == nihdi)
            .order_by(t.provider_scores.c.period)
        ).mappings()
        by_rule = connection.execute(
            sa.select(
                t.flags.c.rule_id,
                sa.func.count().label("lines"),
                sa.func.sum(t.flags.c.amount_at_stake_eur).label("amount_at_stake_eur"),
                sa.func.min(t.flags.c.legal_basis).label("legal_basis"),
            )
            .where(t.flags.c.run_id == run, t.flags.c.provider_nihdi == nihdi)
            .group_by(t.flags.c.rule_id)
            .order_by(t.flags.c.rule_id)
        ).mappings()
        answer: dict[str, Any] = {
            "run_id": run,
            "provider_nihdi": nihdi,
            "profession": summary["profession"],
            "region": summary["region"],
            "lines_flagged": summary["lines_flagged"],
            "amount_at_stake_eur": summary["amount_at_stake_eur"],
            "score": summary["score"],
            "rank": summary["rank"],
            "periods": [
                {
                    "period": p["period"],
                    "peer_group": p["peer_group"],
                    "peer_group_size": p["peer_group_size"],
                    "score": p["score"],
                    "rank": p["rank"],
                    "explanation": p["explanation"],
                    "peer_comparison": json.loads(p["contributions"]),
                    "profile": json.loads(p["profile"]),
                }
                for p in periods
            ],
            "flags_by_rule": [{**r, "amount_at_stake_eur": round(float(r["amount_at_stake_eur"]), 2)} for r in by_rule],
        }
        if caller.role in ("inspector", "admin"):
            answer["cases"] = [
                dict(c)
                for c in connection.execute(
                    sa.select(t.cases.c.id, t.cases.c.status, t.cases.c.outcome).where(
                        t.cases.c.provider_nihdi == nihdi
                    )
                ).mappings()
            ]
        return answer

    @app.get("/providers/{nihdi}/claims", tags=["providers"])
    def claims(
        connection: Connection,
        caller: Annotated[Caller, Depends(allow("inspector"))],
        nihdi: Annotated[str, NIHDI],
        run_id: RunId = None,
        rule: Annotated[RuleId | None, Query(description="Only the lines of this rule.")] = None,
        page: Page = 1,
        page_size: PageSize = 50,
    ) -> dict[str, Any]:
        """The flagged claim lines behind a provider's flags, with their evidence (audited)."""
        run = _run(connection, run_id)
        where = [t.flags.c.run_id == run, t.flags.c.provider_nihdi == nihdi]
        if rule:
            where.append(t.flags.c.rule_id == rule.value)
        _provider_in_run(connection, run, nihdi)
        total = _count(connection, t.flags, where)
        rows = _rows(connection, t.flags, where, [t.flags.c.rule_id, t.flags.c.claim_id], page, page_size)
        items = [
            {
                **{k: v for k, v in r.items() if k not in ("id", "run_id", "evidence")},
                "evidence": json.loads(r["evidence"]),
            }
            for r in rows
        ]
        audit(
            connection,
            caller,
            "read_claims",
            provider_nihdi=nihdi,
            detail={"run_id": run, "rule": rule and rule.value, "page": page, "claims": [i["claim_id"] for i in items]},
        )
        return _page(total, page, page_size, items, run_id=run)

    app.state.checkers = {}

    @app.post("/claims/check", tags=["claims"])
    def check_claims(
        request: Request,
        response: Response,
        caller: Annotated[Caller, Depends(allow("inspector"))],
        body: ClaimsCheck,
    ) -> dict[str, Any]:
        """Check claims as they arrive: per claim, the flags of every rule (durable_rules back end).

        Invalid records answer 422 with one error per quarantine reason; the valid lines of
        the same request are still checked and answered under ``claims``.
        """
        engine = request.app.state.engine
        with engine.begin() as connection:
            run = _run(connection, None)
            audit(connection, caller, "check_claims", detail={"run_id": run, "lines": len(body.lines)})
        try:
            result = checker_for(engine, run, request.app.state.checkers).check(body.lines, body.invoices)
        except (ContractError, ValueError) as exc:
            raise _invalid(("body",), str(exc)) from None
        errors = result.pop("errors")
        if errors:
            response.status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
            result["detail"] = [
                {
                    "loc": ["body", "lines" if e["table"] == "billing_lines" else "invoices", e["index"]],
                    "msg": reason,
                    "type": "quarantine",
                    **{k: v for k, v in e.items() if k in ("claim_id", "invoice_id")},
                }
                for e in errors
                for reason in e["reasons"]
            ]
        return result

    @app.post("/cases", tags=["cases"], status_code=status.HTTP_201_CREATED)
    def open_case(
        connection: Connection, caller: Annotated[Caller, Depends(allow("inspector"))], body: CaseOpen
    ) -> dict[str, Any]:
        """Open a case on a provider of a published run."""
        run = _run(connection, body.run_id)
        _provider_in_run(connection, run, body.provider_nihdi)
        now = datetime.now(UTC)
        case_id = connection.execute(
            t.cases.insert().values(
                provider_nihdi=body.provider_nihdi,
                run_id=run,
                status="open",
                notes=body.notes,
                opened_by=caller.name,
                opened_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
        change = {"status": [None, "open"], "notes": body.notes}
        connection.execute(t.case_events.insert().values(case_id=case_id, author=caller.name, at=now, change=change))
        audit(connection, caller, "open_case", provider_nihdi=body.provider_nihdi, case_id=case_id, detail=change)
        return _case(connection, case_id)

    @app.get("/cases", tags=["cases"])
    def list_cases(
        connection: Connection,
        _: Annotated[Caller, Depends(allow("inspector"))],
        status_: Annotated[Literal["open", "investigating", "closed"] | None, Query(alias="status")] = None,
        provider_nihdi: Annotated[str | None, Query(pattern=r"^\d{11}$")] = None,
        page: Page = 1,
        page_size: PageSize = 50,
    ) -> dict[str, Any]:
        """Cases, newest first."""
        where = []
        if status_:
            where.append(t.cases.c.status == status_)
        if provider_nihdi:
            where.append(t.cases.c.provider_nihdi == provider_nihdi)
        total = _count(connection, t.cases, where)
        return _page(total, page, page_size, _rows(connection, t.cases, where, [t.cases.c.id.desc()], page, page_size))

    @app.get("/cases/outcomes", tags=["cases"])
    def outcomes(
        connection: Connection, _: Annotated[Caller, Depends(allow("inspector", "data_scientist", "sca"))]
    ) -> list[dict[str, Any]]:
        """Closed cases and their outcomes, to measure detector precision against."""
        rows = connection.execute(
            sa.select(
                t.cases.c.id,
                t.cases.c.provider_nihdi,
                t.cases.c.run_id,
                t.cases.c.outcome,
                t.cases.c.amount_to_recover_eur,
                t.cases.c.closed_at,
            )
            .where(t.cases.c.status == "closed")
            .order_by(t.cases.c.id)
        ).mappings()
        return [dict(r) for r in rows]

    @app.get("/cases/{case_id}", tags=["cases"])
    def get_case(
        connection: Connection,
        _: Annotated[Caller, Depends(allow("inspector"))],
        case_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    ) -> dict[str, Any]:
        """A case with its full history of changes."""
        return _case(connection, case_id)

    @app.patch("/cases/{case_id}", tags=["cases"])
    def change_case(
        connection: Connection,
        caller: Annotated[Caller, Depends(allow("inspector"))],
        case_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
        body: CaseChange,
    ) -> dict[str, Any]:
        """Move a case along open → investigating → closed; closing records its outcome."""
        current = _case(connection, case_id)
        if current["status"] == "closed":
            raise HTTPException(status.HTTP_409_CONFLICT, f"Case {case_id} is closed; it can no longer change")
        values: dict[str, Any] = {}
        if body.status and body.status != current["status"]:
            if body.status not in CASE_FLOW[current["status"]]:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, f"A case cannot go from '{current['status']}' to '{body.status}'"
                )
            values["status"] = body.status
        closing = values.get("status") == "closed"
        if (body.outcome is not None or body.amount_to_recover_eur is not None) and not closing:
            raise _invalid(
                ("body", "outcome"), "An outcome and an amount to recover are recorded when the case is closed"
            )
        if closing and body.outcome is None:
            raise _invalid(("body", "outcome"), f"Closing a case needs an outcome: {' or '.join(OUTCOMES)}")
        if closing:
            values |= {"outcome": body.outcome, "amount_to_recover_eur": body.amount_to_recover_eur or 0.0}
        if body.notes is not None:
            values["notes"] = body.notes
        if not values:
            raise _invalid(("body",), "Nothing to change: give status, outcome, amount_to_recover_eur or notes")
        now = datetime.now(UTC)
        if closing:
            values["closed_at"] = now
        connection.execute(t.cases.update().where(t.cases.c.id == case_id).values(**values, updated_at=now))
        change = {k: [current.get(k), v] for k, v in values.items() if k != "closed_at"}
        connection.execute(t.case_events.insert().values(case_id=case_id, author=caller.name, at=now, change=change))
        audit(
            connection, caller, "change_case", provider_nihdi=current["provider_nihdi"], case_id=case_id, detail=change
        )
        return _case(connection, case_id)

    @app.get("/reports/annual/{year}", tags=["reports"])
    def annual(
        connection: Connection,
        _: Annotated[Caller, Depends(allow("sca"))],
        year: Annotated[int, Path(ge=1990, le=2100)],
        basis: Literal["service", "detection"] = "service",
    ) -> dict[str, Any]:
        """The SCA's annual figures: per rule, breakdowns, data quality, anomalies, cases, datamatchings."""
        return annual_report(connection, year, basis)

    @app.get("/audit", tags=["service"])
    def audit_log(
        connection: Connection,
        _: Annotated[Caller, Depends(allow())],
        actor: Annotated[str | None, Query(max_length=128)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        page: Page = 1,
        page_size: PageSize = 50,
    ) -> dict[str, Any]:
        """The audit log, newest first (admin only)."""
        where = []
        if actor:
            where.append(t.audit_log.c.actor == actor)
        if action:
            where.append(t.audit_log.c.action == action)
        total = _count(connection, t.audit_log, where)
        items = _rows(connection, t.audit_log, where, [t.audit_log.c.id.desc()], page, page_size)
        return _page(total, page, page_size, items)

    return app

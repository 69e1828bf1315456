"""Cases: an inspector opens one on a provider, moves it along and closes it with an outcome."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api import tables as t
from api.auth import audit
from api.dependencies import Page, PageSize, Session, allow, invalid
from api.pseudonyms import pseudonym
from api.queries import case_with_history, closed_outcomes, decision_record, listing, matching, provider_in_run

router = APIRouter(prefix="/cases", tags=["cases"])
CASE_FLOW = {"open": {"investigating", "closed"}, "investigating": {"closed"}, "closed": set()}
OUTCOMES = ("confirmed", "unfounded")
CaseId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class CaseOpen(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    provider_nihdi: str = Field(pattern=r"^[0-9]{11}$")
    notes: str = Field(default="", max_length=10_000)
    run_id: str | None = Field(default=None, max_length=64)


class CaseChange(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    status: Literal["open", "investigating", "closed"] | None = None
    outcome: Literal["confirmed", "unfounded"] | None = None
    amount_to_recover_eur: float | None = Field(default=None, ge=0, le=1e12)
    notes: str | None = Field(default=None, max_length=10_000)


class CaseAction(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    action: Literal["sensitisation", "warning", "official_report", "sanction"]
    taken_on: date = Field(description="The day it was taken: today or before.")
    amount_eur: float | None = Field(
        default=None, gt=0, le=1e12, description="A sanction's amount, and only a sanction's."
    )
    note: str = Field(default="", max_length=10_000)


class Recovery(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    amount_eur: float = Field(gt=0, le=1e12, description="What was received, in euros.")
    received_on: date = Field(description="The day it was received: today or before.")
    note: str = Field(default="", max_length=10_000)


@router.post("", status_code=status.HTTP_201_CREATED)
def open_case(session: Annotated[Session, Depends(allow("inspector"))], body: CaseOpen) -> dict[str, Any]:
    """Open a case on a provider of a published run; it keeps what prompted it (its
    ``decision_record``: flags, scores, explanations, model and catalog versions)."""
    with session.begin() as connection:
        caller = session.caller
        run = session.run(connection, body.run_id)
        provider_in_run(connection, run, body.provider_nihdi)
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
                decision_record=decision_record(connection, run, body.provider_nihdi),
            )
        ).inserted_primary_key[0]
        change = {"status": [None, "open"], "notes": body.notes}
        connection.execute(t.case_events.insert().values(case_id=case_id, author=caller.name, at=now, change=change))
        audit(connection, caller, "open_case", provider_nihdi=body.provider_nihdi, case_id=case_id, detail=change)
        return case_with_history(connection, case_id)


@router.get("")
def list_cases(
    session: Annotated[Session, Depends(allow("inspector"))],
    status_: Annotated[Literal["open", "investigating", "closed"] | None, Query(alias="status")] = None,
    provider_nihdi: Annotated[str | None, Query(pattern=r"^[0-9]{11}$")] = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> dict[str, Any]:
    """Cases, newest first."""
    where = matching(t.cases, status=status_, provider_nihdi=provider_nihdi)
    with session.begin() as connection:
        # A case's decision record is served with the case, not in lists.
        found = listing(connection, t.cases, where, [t.cases.c.id.desc()], page, page_size, ("decision_record",))
        detail = {"status": status_, "page": page, "cases": [c["id"] for c in found["items"]]}
        audit(connection, session.caller, "list_cases", provider_nihdi=provider_nihdi, detail=detail)
        return found


@router.get("/outcomes")
def outcomes(session: Annotated[Session, Depends(allow("inspector", "data_scientist", "sca"))]) -> list[dict[str, Any]]:
    """Closed cases and their outcomes, to measure detector precision against (a data
    scientist sees the providers' pseudonyms)."""
    with session.begin() as connection:
        found = t.records(connection.execute(closed_outcomes()))
        audit(connection, session.caller, "read_outcomes", detail={"cases": len(found)})
    if session.pseudonymous:
        return [{**case, "provider_nihdi": pseudonym(case["provider_nihdi"], session.pseudonym_key)} for case in found]
    return found


@router.get("/{case_id}")
def get_case(session: Annotated[Session, Depends(allow("inspector"))], case_id: CaseId) -> dict[str, Any]:
    """A case with its full history of changes."""
    with session.begin() as connection:
        found = case_with_history(connection, case_id)
        audit(connection, session.caller, "read_case", provider_nihdi=found["provider_nihdi"], case_id=case_id)
        return found


@router.patch("/{case_id}")
def change_case(
    session: Annotated[Session, Depends(allow("inspector"))], case_id: CaseId, body: CaseChange
) -> dict[str, Any]:
    """Move a case along open → investigating → closed; closing records its outcome."""
    with session.begin() as connection:
        caller = session.caller
        current = case_with_history(connection, case_id)
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
            raise invalid(
                ("body", "outcome"), "An outcome and an amount to recover are recorded when the case is closed"
            )
        if closing and body.outcome is None:
            raise invalid(("body", "outcome"), f"Closing a case needs an outcome: {' or '.join(OUTCOMES)}")
        if closing:
            values |= {"outcome": body.outcome, "amount_to_recover_eur": body.amount_to_recover_eur or 0.0}
        if body.notes is not None:
            values["notes"] = body.notes
        if not values:
            raise invalid(("body",), "Nothing to change: give status, outcome, amount_to_recover_eur or notes")
        now = datetime.now(UTC)
        if closing:
            values["closed_at"] = now
        connection.execute(t.cases.update().where(t.cases.c.id == case_id).values(**values, updated_at=now))
        change = {k: [current.get(k), v] for k, v in values.items() if k != "closed_at"}
        connection.execute(t.case_events.insert().values(case_id=case_id, author=caller.name, at=now, change=change))
        audit(
            connection, caller, "change_case", provider_nihdi=current["provider_nihdi"], case_id=case_id, detail=change
        )
        return case_with_history(connection, case_id)


@router.post("/{case_id}/actions", status_code=status.HTTP_201_CREATED)
def take_action(
    session: Annotated[Session, Depends(allow("inspector"))], case_id: CaseId, body: CaseAction
) -> dict[str, Any]:
    """Record a step of the graduated response on a case: sensitisation, warning, official
    report (PV) or administrative sanction (with its amount). Steps never go back down the
    ladder nor back in time."""
    with session.begin() as connection:
        caller = session.caller
        current = case_with_history(connection, case_id)
        if (body.action == "sanction") != (body.amount_eur is not None):
            raise invalid(("body", "amount_eur"), "A sanction has an amount in euros, and only a sanction has one")
        if body.taken_on > date.today():
            raise invalid(("body", "taken_on"), f"An action is recorded once taken; {body.taken_on} is in the future")
        if current["actions"]:
            last = current["actions"][-1]
            highest = max(t.LADDER.index(a["action"]) for a in current["actions"])
            if t.LADDER.index(body.action) < highest:
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"Case {case_id} is at '{t.LADDER[highest]}' already; the response does not go back to "
                    f"'{body.action}'",
                )
            if body.taken_on < last["taken_on"]:
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"Case {case_id}'s last action was taken on {last['taken_on']}; {body.taken_on} is before it",
                )
        now = datetime.now(UTC)
        values = body.model_dump()
        connection.execute(
            t.case_actions.insert().values(case_id=case_id, author=caller.name, recorded_at=now, **values)
        )
        change = {"action": [None, body.action], "taken_on": body.taken_on.isoformat(), "amount_eur": body.amount_eur}
        connection.execute(t.case_events.insert().values(case_id=case_id, author=caller.name, at=now, change=change))
        audit(
            connection, caller, "case_action", provider_nihdi=current["provider_nihdi"], case_id=case_id, detail=change
        )
        return case_with_history(connection, case_id)


@router.post("/{case_id}/recoveries", status_code=status.HTTP_201_CREATED)
def record_recovery(
    session: Annotated[Session, Depends(allow("inspector"))], case_id: CaseId, body: Recovery
) -> dict[str, Any]:
    """Record money recovered on a case closed as confirmed (repayments may come in
    instalments); the case then shows each recovery and their total beside the amount to
    recover, and the annual report counts them in the year received."""
    with session.begin() as connection:
        caller = session.caller
        current = case_with_history(connection, case_id)
        if (current["status"], current["outcome"]) != ("closed", "confirmed"):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"Case {case_id} is {current['status']}"
                + (f" ({current['outcome']})" if current["outcome"] else "")
                + "; money is recovered on a case closed as confirmed",
            )
        if body.received_on > date.today():
            raise invalid(("body", "received_on"), f"A recovery is recorded once received; {body.received_on} is ahead")
        now = datetime.now(UTC)
        connection.execute(
            t.case_recoveries.insert().values(case_id=case_id, author=caller.name, recorded_at=now, **body.model_dump())
        )
        change = {"recovered_eur": body.amount_eur, "received_on": body.received_on.isoformat()}
        connection.execute(t.case_events.insert().values(case_id=case_id, author=caller.name, at=now, change=change))
        audit(
            connection,
            caller,
            "case_recovery",
            provider_nihdi=current["provider_nihdi"],
            case_id=case_id,
            detail=change,
        )
        return case_with_history(connection, case_id)

"""Real-time checks of claims as they arrive, against the newest published run."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import entry
from api.claims import checker_for
from api.dependencies import Session, allow, invalid
from data_contracts import ContractError

router = APIRouter(tags=["claims"])
CLAIM_ID_CHARS = 64  # of each posted claim id kept in the audit log


class ClaimsCheck(BaseModel):
    """Contract-shaped records: dates ``YYYY-MM-DD``, times ``HH:MM[:SS]``, datetimes ISO."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    lines: list[dict[str, Any]] = Field(min_length=1, max_length=2_000)
    invoices: list[dict[str, Any]] = Field(default_factory=list, max_length=2_000)


@router.post("/claims/check", response_class=JSONResponse)
def check_claims(
    request: Request, session: Annotated[Session, Depends(allow("inspector"))], body: ClaimsCheck
) -> JSONResponse:
    """Check claims as they arrive: per claim, the flags of every rule (durable_rules back end).

    Invalid records answer 422 with one error per quarantine reason; the valid lines of
    the same request are still checked and answered under ``claims``.
    """
    run = session.newest_run
    if run is None:  # none read with the token: the database says which, or that there is none
        with session.read() as connection:
            run = session.run(connection, None)
    claims = [str(line.get("claim_id"))[:CLAIM_ID_CHARS] for line in body.lines]
    # Written with the entries of the checks decided together, before any of them is decided.
    seen = entry(session.caller, "check_claims", detail={"run_id": run, "lines": len(claims), "claims": claims})
    try:
        result = checker_for(session.engine, run, request.app.state.checkers).check(
            body.lines, body.invoices, session.caller.name, seen
        )
    except (ContractError, ValueError) as exc:
        raise invalid(("body",), str(exc)) from None
    # The answer is JSON's own types already: sent as it is, not walked again by the framework.
    errors = result.pop("errors")
    if not errors:
        return JSONResponse(result)
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
    return JSONResponse(result, status.HTTP_422_UNPROCESSABLE_CONTENT)

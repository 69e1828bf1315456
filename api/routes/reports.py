"""The SCA's annual figures."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from api.auth import audit
from api.dependencies import Session, allow
from api.formats import Lang
from api.report import annual_report
from api.targets import load_targets
from secm.settings import get_settings

router = APIRouter(prefix="/reports", tags=["reports"])


@router.get("/annual/{year}")
def annual(
    session: Annotated[Session, Depends(allow("sca"))],
    year: Annotated[int, Path(ge=1990, le=2100)],
    basis: Literal["service", "detection"] = "service",
    suppress: Annotated[
        bool, Query(description="Suppress cells of fewer than SECM_REPORT_MIN_CELL (false: internal use, audited).")
    ] = True,
    lang: Annotated[Lang, Query(description="Language of the rules' titles: fr, nl or en.")] = "en",
) -> dict[str, Any]:
    """The SCA's annual figures: per rule, breakdowns, data quality, anomalies, cases, datamatchings."""
    with session.begin() as connection:
        minimum = get_settings().report_min_cell if suppress else 0
        if not suppress:
            audit(connection, session.caller, "read_report_unsuppressed", detail={"year": year, "basis": basis})
        settings = get_settings()
        try:
            targets = load_targets(settings.targets_file, year)
        except ValueError as exc:  # the service's own configuration, not the caller's request
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc)) from None
        return annual_report(connection, year, basis, minimum, lang, targets)

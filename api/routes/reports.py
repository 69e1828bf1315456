"""The SCA's annual figures."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path

from api.dependencies import Session, allow
from api.report import annual_report

router = APIRouter(prefix="/reports", tags=["reports"])


@router.get("/annual/{year}")
def annual(
    session: Annotated[Session, Depends(allow("sca"))],
    year: Annotated[int, Path(ge=1990, le=2100)],
    basis: Literal["service", "detection"] = "service",
) -> dict[str, Any]:
    """The SCA's annual figures: per rule, breakdowns, data quality, anomalies, cases, datamatchings."""
    with session.begin() as connection:
        return annual_report(connection, year, basis)

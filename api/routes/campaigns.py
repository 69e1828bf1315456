"""Sensitisation campaigns: who was selected and contacted, and the measured effect."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, status

from api.campaigns import NAME_PATTERN, CampaignError, campaign, campaigns, impact
from api.dependencies import RunId, Session, allow

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


@router.get("")
def listing(session: Annotated[Session, Depends(allow("inspector", "sca"))]) -> dict[str, Any]:
    """Every campaign, newest first: rule, criteria, when and by whom, providers per arm."""
    with session.read() as connection:
        return {"items": campaigns(connection)}


@router.get("/{name}")
def detail(
    session: Annotated[Session, Depends(allow("inspector", "sca"))],
    name: Annotated[str, Path(pattern=NAME_PATTERN)],
    run_id: RunId = None,
) -> dict[str, Any]:
    """A campaign, its providers (contacted or comparison) and its effect in a later run
    (default: the newest)."""
    with session.read() as connection:
        try:
            found = campaign(connection, name)
            return {**found, "impact": impact(connection, found, run_id)}
        except CampaignError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None

"""Reference endpoints: liveness, the rule catalog and the published runs."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends

from api import tables as t
from api.auth import ROLES
from api.dependencies import Session, allow
from api.queries import NO_BACKTEST, rule_backtest
from rules import load_catalog

router = APIRouter()


@router.get("/health", tags=["service"])
def health() -> dict[str, str]:
    """Liveness; needs no token."""
    return {"status": "ok"}


@router.get("/rules", tags=["reference"])
def rules(session: Annotated[Session, Depends(allow(*ROLES))]) -> list[dict[str, Any]]:
    """The rule catalog: titles, legal basis, severity, parameters per legislation, and its
    backtest: of the providers it flagged that were investigated, the share confirmed."""
    catalog = load_catalog()
    with session.read() as connection:
        backtest = rule_backtest(connection)
    return [
        {
            "rule_id": rule.id,
            "titles": rule.titles.model_dump(),
            "legal_basis": rule.legal_basis,
            "description": rule.description,
            "severity": rule.severity,
            "parameters": {name: rule.parameters_for(name) for name in catalog.legislations},
            "backtest": backtest.get(rule.id, NO_BACKTEST),
        }
        for rule in catalog
    ]


@router.get("/runs", tags=["reference"])
def runs(session: Annotated[Session, Depends(allow(*ROLES))]) -> list[dict[str, Any]]:
    """Published runs, newest first, with their per-rule figures."""
    with session.read() as connection:
        rows = t.records(
            connection.execute(
                sa.select(t.runs).where(t.runs.c.status == "complete").order_by(t.runs.c.published_at.desc())
            )
        )
    return [{**{k: v for k, v in row.items() if k != "info"}, "rules": row["info"].get("rules", {})} for row in rows]

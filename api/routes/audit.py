"""The audit log, for administrators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api import tables as t
from api.auth import audit
from api.dependencies import Page, PageSize, Session, allow
from api.queries import listing, matching

router = APIRouter(tags=["service"])


@router.get("/audit")
def audit_log(
    session: Annotated[Session, Depends(allow())],
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    page: Page = 1,
    page_size: PageSize = 50,
) -> dict[str, Any]:
    """The audit log, newest first (admin only); reading it is itself audited."""
    where = matching(t.audit_log, actor=actor, action=action)
    with session.begin() as connection:
        found = listing(connection, t.audit_log, where, [t.audit_log.c.id.desc()], page, page_size)
        audit(connection, session.caller, "read_audit", detail={"actor": actor, "action": action, "page": page})
        return found

"""Making a registered model the champion: someone approves it, and that is recorded twice,
on the model version (MLflow tags) and in the application's audit log."""

from __future__ import annotations

from typing import Any

APPROVER_CHARS = 128  # an audit-log actor's length


def approve(version: str, approved_by: str, detail: dict[str, Any]) -> None:
    """Make ``version`` the champion, approved by ``approved_by``; ``detail`` (detector,
    metric...) goes into the audit entry. The entry is written in the transaction that
    surrounds the promotion: no promotion without its entry, no entry for a failed one."""
    from api.auth import Caller, audit
    from api.database import migrate
    from detectors.tracking import promote
    from secm.settings import get_settings

    name = approved_by.strip()
    if not name:
        raise ValueError("A champion is approved by someone: give their name")
    if len(name) > APPROVER_CHARS:
        raise ValueError(f"An approver's name has at most {APPROVER_CHARS} characters")
    with migrate(get_settings().effective_database_url).begin() as connection:
        audit(connection, Caller(name, "approver"), "promote_model", detail={"version": version, **detail})
        promote(version, name)

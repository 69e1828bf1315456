"""Bearer tokens, roles and the append-only audit log.

A token is shown once, when created; only its SHA-256 is stored. Roles grant least
privilege: ``inspector`` (providers, claim lines, cases), ``data_scientist`` (profiles,
scores, case outcomes; no claim lines), ``sca`` (aggregates and reports; no claim lines),
``admin`` (everything, and the audit log).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from api import tables as t

ROLES = ("inspector", "data_scientist", "sca", "admin")


@dataclass(frozen=True)
class Caller:
    name: str
    role: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: sa.Engine, role: str, name: str | None = None) -> tuple[str, str]:
    """A new token for ``role``: ``(name, token)``; the token itself is not stored."""
    if role not in ROLES:
        msg = f"Unknown role '{role}'; roles: {', '.join(ROLES)}"
        raise ValueError(msg)
    token = f"secm_{secrets.token_urlsafe(32)}"
    name = name or f"{role}-{secrets.token_hex(3)}"
    with engine.begin() as connection:
        taken = connection.execute(sa.select(t.tokens.c.id).where(t.tokens.c.name == name)).first()
        if taken:
            msg = f"A token named '{name}' already exists; choose another --name"
            raise ValueError(msg)
        connection.execute(
            t.tokens.insert().values(name=name, role=role, token_hash=_hash(token), created_at=datetime.now(UTC))
        )
    return name, token


def revoke_token(engine: sa.Engine, name: str) -> None:
    with engine.begin() as connection:
        done = connection.execute(
            t.tokens.update()
            .where(t.tokens.c.name == name, t.tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    if done.rowcount == 0:
        msg = f"No active token named '{name}'"
        raise ValueError(msg)


def caller_for(connection: sa.Connection, token: str) -> Caller | None:
    row = connection.execute(
        sa.select(t.tokens.c.name, t.tokens.c.role).where(
            t.tokens.c.token_hash == _hash(token), t.tokens.c.revoked_at.is_(None)
        )
    ).first()
    return Caller(row.name, row.role) if row else None


def audit(
    connection: sa.Connection,
    caller: Caller,
    action: str,
    *,
    provider_nihdi: str | None = None,
    case_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry to the audit log (nothing ever updates or deletes it)."""
    connection.execute(
        t.audit_log.insert().values(
            at=datetime.now(UTC),
            actor=caller.name,
            role=caller.role,
            action=action,
            provider_nihdi=provider_nihdi,
            case_id=case_id,
            detail=detail or {},
        )
    )

"""Bearer tokens, roles and the append-only audit log.

A token is shown once, when created; only its SHA-256 is stored. It may expire; its last use
is recorded (to the minute, so that a busy token does not write on every request). Roles grant least
privilege: ``inspector`` (providers, claim lines, cases), ``data_scientist`` (profiles,
scores, case outcomes; no claim lines), ``sca`` (aggregates and reports; no claim lines),
``admin`` (everything, and the audit log).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa

from api import tables as t
from api.database import SQLITE_BUSY_SECONDS

ROLES = ("inspector", "data_scientist", "sca", "admin")
LAST_USE_RESOLUTION = timedelta(minutes=1)
DURATION_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


class Unauthorized(Exception):
    """A token that does not admit its bearer, with the reason to tell them."""


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h`` or ``30m`` as a duration (a positive whole number and a unit)."""
    number, unit = text[:-1], text[-1:]
    if unit not in DURATION_UNITS or not (number.isascii() and number.isdigit()) or int(number) == 0:
        msg = f"A duration is a positive whole number of days, hours or minutes, e.g. 90d, 12h or 30m; not {text!r}"
        raise ValueError(msg)
    return int(number) * DURATION_UNITS[unit]


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; every stored moment is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True)
class Caller:
    name: str
    role: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    engine: sa.Engine, role: str, name: str | None = None, expires_in: timedelta | None = None
) -> tuple[str, str]:
    """A new token for ``role``: ``(name, token)``; the token itself is not stored. It stops
    working ``expires_in`` from now (``None``: when revoked)."""
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
        now = datetime.now(UTC)
        connection.execute(
            t.tokens.insert().values(
                name=name,
                role=role,
                token_hash=token_hash(token),
                created_at=now,
                expires_at=now + expires_in if expires_in else None,
            )
        )
    return name, token


def list_tokens(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every token: name, role, created, expires, last used, revoked (never the token)."""
    columns = ("name", "role", "created_at", "expires_at", "last_used_at", "revoked_at")
    with engine.connect() as connection:
        rows = connection.execute(sa.select(*(t.tokens.c[c] for c in columns)).order_by(t.tokens.c.id))
        return [{c: _utc(v) if isinstance(v, datetime) else v for c, v in row._mapping.items()} for row in rows]


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


# Looked up on every request: built once (SQLAlchemy then reuses its compiled form).
_TOKEN = sa.select(
    t.tokens.c.id, t.tokens.c.name, t.tokens.c.role, t.tokens.c.expires_at, t.tokens.c.last_used_at
).where(t.tokens.c.token_hash == sa.bindparam("token_hash"), t.tokens.c.revoked_at.is_(None))


@cache
def _token_with(*also: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """The token's statement reading ``also`` along, built once per set of columns (a statement
    built per request costs its construction and cache key every time)."""
    return _TOKEN.add_columns(*also)


@dataclass(frozen=True)
class Admitted:
    """Who a token admits, and whether its last use is older than the recording resolution."""

    caller: Caller
    token_id: int
    expires_at: datetime | None
    used_at: datetime | None  # now, if the use is to be recorded; None if recorded lately
    also: tuple[Any, ...] = ()  # the values of the ``also`` columns read with the token


def admit(connection: sa.Connection, token: str, *also: sa.ColumnElement[Any]) -> Admitted:
    """Who ``token`` admits, read on ``connection`` (with the scalar columns ``also``, in the
    same statement); :class:`Unauthorized` if nobody.

    Recording the use is left to the caller (:func:`record_use`), after its transaction:
    a read never turns into a write that would wait for a publishing run's lock.
    """
    return admit_hash(connection, token_hash(token), *also)


def admit_hash(connection: sa.Connection, hashed: str, *also: sa.ColumnElement[Any]) -> Admitted:
    """:func:`admit` for a token known by its hash (a workbench session holds the hash, never
    the token)."""
    row = connection.execute(_token_with(*also), {"token_hash": hashed}).first()
    if row is None:
        raise Unauthorized("Invalid or revoked token")
    now = datetime.now(UTC)
    expires_at, last_used_at = _utc(row.expires_at), _utc(row.last_used_at)
    if expires_at is not None and expires_at <= now:
        raise Unauthorized(f"Token expired on {expires_at:%Y-%m-%d %H:%M} UTC; ask for a new one")
    stale = last_used_at is None or now - last_used_at >= LAST_USE_RESOLUTION
    return Admitted(
        Caller(row.name, row.role),
        row.id,
        expires_at,
        now if stale else None,
        tuple(row[len(_TOKEN.selected_columns) :]),
    )


def record_use(engine: sa.Engine, token_id: int, now: datetime) -> None:
    """Best effort: a request never waits to record its token's use. On SQLite, a publishing
    run holds the one write lock for its whole transaction; then the use is recorded by a
    later request instead (the lock is tried, not waited for)."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        driver = connection.connection.driver_connection  # the PRAGMA is no part of a transaction
        if sqlite:
            driver.execute("PRAGMA busy_timeout = 0")
        try:
            with connection.begin():
                connection.execute(t.tokens.update().where(t.tokens.c.id == token_id).values(last_used_at=now))
        except sa.exc.OperationalError:
            if not sqlite:
                raise
        finally:
            if sqlite:
                driver.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_SECONDS * 1000}")


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
    connection.execute(t.audit_log.insert(), [entry(caller, action, provider_nihdi, case_id, detail)])


def entry(
    caller: Caller,
    action: str,
    provider_nihdi: str | None = None,
    case_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An audit-log row for :func:`audit`, or for checks decided together (written by
    ``api.history.History.begin``), stamped now."""
    return {
        "at": datetime.now(UTC),
        "actor": caller.name,
        "role": caller.role,
        "action": action,
        "provider_nihdi": provider_nihdi,
        "case_id": case_id,
        "detail": detail or {},
    }

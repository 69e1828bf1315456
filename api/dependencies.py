"""What every endpoint shares: the caller and their database session, and the common parameters.

An endpoint declares the roles it serves with ``Depends(allow(...))`` and receives a
``Session``: its caller, and the means to open one transaction on the application database.
Sync endpoints run in a worker thread and hold a connection only inside ``with
session.begin()`` (or ``session.read()``), so a request holds at most one connection at a
time and never while its answer is sent (see ``api.admission`` for why that matters).

The token is checked before the request is validated, so a stranger gets 401 whatever they
send; every refusal (401 or 403) is an audit entry. A token admitted lately is not read
again: each process keeps what it read of a token (its caller, expiry and the newest run) for
``recheck_seconds`` (default 1 s), then reads it again. Under load that spares most requests
a database read and a hop to a worker thread, half of a worklist page's cost; the price is
that a revoked token, or a newly published run, takes effect within that second rather than
at once. Expiry is exact: it is checked on every request against the expiry read with the
token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

import pydantic_core
import sqlalchemy as sa
from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Caller, Unauthorized, admit_hash, audit, record_use, token_hash
from api.database import reading
from api.pseudonyms import PATTERN as PSEUDONYM_PATTERN
from api.pseudonyms import sees_pseudonyms
from api.queries import NEWEST_RUN, page_of, run_of
from api.worklist import Worklists
from rules import load_catalog

MAX_PAGE_SIZE = 200
NIHDI = Path(pattern=r"^[0-9]{11}$", description="The provider's 11-digit NIHDI/RIZIV number.")
PROVIDER = Path(
    pattern=rf"^([0-9]{{11}}|{PSEUDONYM_PATTERN.strip('^$')})$",
    description="The provider's 11-digit NIHDI/RIZIV number, or its pseudonym (PS and 20 hex digits), "
    "the only form a data scientist sees and may give.",
)
# The shipped catalog's rule ids, so that the OpenAPI document lists the values a filter takes.
RuleId = Enum("RuleId", {rule.id: rule.id for rule in load_catalog()}, type=str)  # type: ignore[misc]
RunId = Annotated[str | None, Query(description="A published run; default: the newest.", max_length=64)]
Page = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page, at most {MAX_PAGE_SIZE}.")]

REFUSED_PATH_CHARS = 256  # of a refused request's path kept in the audit log
PASSES_KEPT = 10_000  # tokens remembered per process; more are forgotten all at once
bearer = HTTPBearer(auto_error=False, description="A token from `secm token create`.")


@dataclass(frozen=True)
class Pass:
    """What a check of a token found: who it admits until when, and the newest run then."""

    caller: Caller
    expires_at: datetime | None
    newest_run: str | None
    checked_at: float  # time.monotonic() of the check


class Passes:
    """The tokens this process admitted lately, read again after ``recheck_seconds``."""

    def __init__(self, recheck_seconds: float) -> None:
        self.recheck_seconds = recheck_seconds
        self._passes: dict[str, Pass] = {}
        self._lock = threading.Lock()

    def valid(self, hashed: str) -> Pass | None:
        """The pass of the token hashed ``hashed`` if it was checked lately and has not expired
        since; else None."""
        found = self._passes.get(hashed)
        if found is None or time.monotonic() - found.checked_at >= self.recheck_seconds:
            return None
        if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
            return None
        return found

    def check(self, engine: sa.Engine, hashed: str) -> Pass:
        """Read the token hashed ``hashed`` in the database (:class:`Unauthorized` if it admits
        nobody) and remember what was read; its use is recorded after the read, in a
        transaction of its own."""
        with reading(engine).begin() as connection:
            admitted = admit_hash(connection, hashed, NEWEST_RUN)
        if admitted.used_at is not None:
            record_use(engine, admitted.token_id, admitted.used_at)
        found = Pass(admitted.caller, admitted.expires_at, admitted.also[0], time.monotonic())
        with self._lock:
            if len(self._passes) >= PASSES_KEPT:
                self._passes.clear()
            self._passes[hashed] = found
        return found


@dataclass
class Session:
    """A request's caller, and transactions on the application database for them."""

    caller: Caller
    newest_run: str | None  # read with the token
    engine: sa.Engine
    # The worklists of published runs, which never change, held per process.
    worklists: Worklists
    # The key of the provider pseudonyms some roles see (``api.pseudonyms``).
    pseudonym_key: bytes

    @property
    def pseudonymous(self) -> bool:
        """Whether this caller sees providers by pseudonym only."""
        return sees_pseudonyms(self.caller.role)

    def begin(self) -> AbstractContextManager[sa.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        return self.engine.begin()

    def read(self) -> AbstractContextManager[sa.Connection]:
        """A connection for reads only, each statement on its own (autocommit).

        On PostgreSQL this spares the BEGIN and the COMMIT round trips; it sees nothing less
        consistent, since each statement of a READ COMMITTED transaction reads its own
        snapshot anyway.
        """
        return reading(self.engine).begin()

    def run(self, connection: sa.Connection, run_id: str | None) -> str:
        """The requested run, or the newest complete one (read with the token); 404 when
        there is none."""
        return run_of(connection, run_id, self.newest_run)


def allow(*roles: str) -> Callable[..., Awaitable[Session]]:
    """A dependency for callers with a token of one of ``roles`` (admin is always admitted):
    401 for a missing, unknown, revoked or expired token, 403 for another role."""

    async def session(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Session:
        state = request.app.state
        try:
            found = await _admitted(state.passes, state.engine, credentials)
        except HTTPException as refused:
            await run_in_threadpool(_record_refusal, state.engine, request, refused, None)
            raise
        role = found.caller.role
        if role != "admin" and role not in roles:
            forbidden = HTTPException(status.HTTP_403_FORBIDDEN, f"The role '{role}' may not do this")
            await run_in_threadpool(_record_refusal, state.engine, request, forbidden, found.caller)
            raise forbidden
        return Session(found.caller, found.newest_run, state.engine, state.worklists, state.pseudonym_key)

    return session


async def _admitted(passes: Passes, engine: sa.Engine, credentials: HTTPAuthorizationCredentials | None) -> Pass:
    """The pass of the request's token; 401 if it has none or one that admits nobody."""
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Missing bearer token", {"WWW-Authenticate": "Bearer"})
    return await admitted_hash(passes, engine, token_hash(credentials.credentials))


async def admitted_hash(passes: Passes, engine: sa.Engine, hashed: str) -> Pass:
    """The pass of the token hashed ``hashed``; 401 if it admits nobody."""
    found = passes.valid(hashed)
    if found is not None:
        return found
    try:
        return await run_in_threadpool(passes.check, engine, hashed)
    except Unauthorized as refused:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(refused), {"WWW-Authenticate": "Bearer"}) from None


def _record_refusal(engine: sa.Engine, request: Request, refused: HTTPException, caller: Caller | None) -> None:
    """A refused attempt in the audit log: who (when the token was known), what, and why."""
    detail = {
        "method": request.method,
        "path": request.url.path[:REFUSED_PATH_CHARS],
        "status": refused.status_code,
        "reason": refused.detail,
    }
    with engine.begin() as connection:
        audit(connection, caller or Caller("unknown", "none"), "refused", detail=detail)


class Answer(JSONResponse):
    """A JSON answer rendered by pydantic-core in one pass.

    Returned as is, it skips FastAPI's ``jsonable_encoder``, which walks a page of fifty
    providers in Python (1.4 ms, a third of a request's CPU) where pydantic-core takes 0.02 ms.
    For the endpoints that answer most under load.
    """

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


def rendered_page(total: int, number: int, size: int, items: list[str], **extra: Any) -> Response:
    """A page shaped as ``page_of`` shapes it, of items that are JSON already: joined as they
    are rather than parsed and rendered again."""
    head = pydantic_core.to_json(page_of(total, number, size, [], **extra))
    return Response(head.removesuffix(b"[]}") + f"[{','.join(items)}]}}".encode(), media_type="application/json")


def invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message, "input": None}])

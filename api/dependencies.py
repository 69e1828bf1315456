"""What every endpoint shares: the caller and their database session, and the common parameters.

An endpoint declares the roles it serves with ``Depends(allow(...))`` and receives a
``Session``: the means to open one transaction on the application database for its caller.
Endpoints run in a worker thread and hold a connection only inside ``with session.begin()``,
so a request holds at most one connection at a time and never while its answer is sent (see
``api.admission`` for why that matters under load).

A token this process has not admitted yet is checked before the request is validated, so a
stranger gets 401 whatever they send. A token it has admitted before is checked again (for
revocation and expiry) in the request's first transaction, before anything else is read:
one hop to a worker thread and one connection per request instead of two of each, a third
of a request's cost under load. Every endpoint opens a transaction before it answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

import pydantic_core
import sqlalchemy as sa
from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Caller, Unauthorized, admit, record_use, token_hash
from api.queries import NEWEST_RUN, run_of
from api.worklist import Worklists
from rules import load_catalog

MAX_PAGE_SIZE = 200
NIHDI = Path(pattern=r"^\d{11}$", description="The provider's 11-digit NIHDI/RIZIV number.")
# The shipped catalog's rule ids, so that the OpenAPI document lists the values a filter takes.
RuleId = Enum("RuleId", {rule.id: rule.id for rule in load_catalog()}, type=str)  # type: ignore[misc]
RunId = Annotated[str | None, Query(description="A published run; default: the newest.", max_length=64)]
Page = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page, at most {MAX_PAGE_SIZE}.")]

ADMITTED_KEPT = 10_000
bearer = HTTPBearer(auto_error=False, description="A token from `secm token create`.")


@dataclass
class Session:
    """A request's bearer token, and transactions on the application database for its caller."""

    token: str
    roles: tuple[str, ...]
    engine: sa.Engine
    # The worklists of published runs, which never change, held per process.
    worklists: Worklists
    # Tokens this process has admitted before (their hashes).
    admitted: set[str]
    _caller: Caller | None = None
    _newest_run: str | None = None  # read with the token

    @property
    def caller(self) -> Caller:
        """Who is calling; known once the first transaction has begun."""
        if self._caller is None:
            raise RuntimeError("The caller is known once session.begin() has checked the token")
        return self._caller

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises. The first
        one admits the token (401) and its role (403) before the block runs."""
        used = None
        with self.engine.begin() as connection:
            if self._caller is None:
                try:
                    admitted = admit(connection, self.token, NEWEST_RUN)
                except Unauthorized as refused:
                    raise HTTPException(
                        status.HTTP_401_UNAUTHORIZED, str(refused), {"WWW-Authenticate": "Bearer"}
                    ) from None
                role = admitted.caller.role
                if role != "admin" and role not in self.roles:
                    raise HTTPException(status.HTTP_403_FORBIDDEN, f"The role '{role}' may not do this")
                self._caller, used = admitted.caller, admitted
                self._newest_run = admitted.also[0]
                if len(self.admitted) >= ADMITTED_KEPT:
                    self.admitted.clear()
                self.admitted.add(token_hash(self.token))
            yield connection
        if used is not None and used.used_at is not None:
            record_use(self.engine, used.token_id, used.used_at)

    def run(self, connection: sa.Connection, run_id: str | None) -> str:
        """The requested run, or the newest complete one (read with the token: one statement
        less per request); 404 when there is none."""
        return run_of(connection, run_id, self._newest_run)

    def check(self) -> None:
        """Admit the token now, in a transaction of its own."""
        with self.begin():
            pass


def allow(*roles: str) -> Callable[..., Awaitable[Session]]:
    """A dependency for callers with a token of one of ``roles`` (admin is always admitted);
    the token itself is checked by the request's first transaction (see the module)."""

    async def session(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Session:
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Missing bearer token", {"WWW-Authenticate": "Bearer"})
        state = request.app.state
        session = Session(credentials.credentials, roles, state.engine, state.worklists, state.admitted)
        if token_hash(session.token) not in state.admitted:
            await run_in_threadpool(session.check)
        return session

    return session


class Answer(JSONResponse):
    """A JSON answer rendered by pydantic-core in one pass.

    Returned as is, it skips FastAPI's ``jsonable_encoder``, which walks a page of fifty
    providers in Python (1.4 ms, a third of a request's CPU) where pydantic-core takes 0.02 ms.
    For the endpoints that answer most under load.
    """

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


def invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": location, "msg": message, "input": None}])

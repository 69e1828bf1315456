"""What every endpoint shares: the caller and their database session, and the common parameters.

An endpoint declares the roles it serves with ``Depends(allow(...))`` and receives a
``Session``: who is calling, and the means to open one transaction on the application
database. Endpoints run in a worker thread and hold a connection only inside
``with session.begin()``, so a request holds at most one connection at a time and never
while its answer is sent (see ``api.admission`` for why that matters under load).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
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

from api.auth import Caller, Unauthorized, caller_for
from rules import load_catalog

MAX_PAGE_SIZE = 200
NIHDI = Path(pattern=r"^\d{11}$", description="The provider's 11-digit NIHDI/RIZIV number.")
# The shipped catalog's rule ids, so that the OpenAPI document lists the values a filter takes.
RuleId = Enum("RuleId", {rule.id: rule.id for rule in load_catalog()}, type=str)  # type: ignore[misc]
RunId = Annotated[str | None, Query(description="A published run; default: the newest.", max_length=64)]
Page = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page, at most {MAX_PAGE_SIZE}.")]

bearer = HTTPBearer(auto_error=False, description="A token from `secm token create`.")


@dataclass(frozen=True)
class Session:
    """The caller of a request, and transactions on the application database for them."""

    caller: Caller
    engine: sa.Engine
    # Answers about published runs, which never change, remembered per application.
    memo: dict[tuple[Any, ...], Any]

    def begin(self) -> AbstractContextManager[sa.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        return self.engine.begin()

    def remembered(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()``, once per ``key``; only for what a published run fixes for ever."""
        if key not in self.memo:
            if len(self.memo) > 10_000:
                self.memo.clear()
            self.memo[key] = compute()
        return self.memo[key]


def allow(*roles: str) -> Callable[..., Awaitable[Session]]:
    """A dependency admitting a valid token of one of ``roles`` (admin is always admitted)."""

    async def session(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Session:
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Missing bearer token", {"WWW-Authenticate": "Bearer"})
        engine = request.app.state.engine
        try:
            caller = await run_in_threadpool(caller_for, engine, credentials.credentials)
        except Unauthorized as refused:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(refused), {"WWW-Authenticate": "Bearer"}) from None
        if caller.role != "admin" and caller.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"The role '{caller.role}' may not do this")
        return Session(caller, engine, request.app.state.memo)

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

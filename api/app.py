"""The inspectors' HTTP service: flagged providers, evidence, cases, access control and audit.

``create_app(database_url)`` builds the FastAPI application over the application database
(migrated on start) from the routers of ``api.routes``; ``from_settings`` builds it from the
environment, once per server process. Every endpoint but ``/health`` needs a bearer token;
each declares the roles it serves. Reads of claim lines and every case change are audited.

Under load, at most ``concurrency`` requests are at work per process (``api.admission``);
the pool holds as many connections and the thread pool more threads than that, so requests
never wait on each other for a connection; the rest wait briefly on the event loop, then 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

from api import web
from api.admission import Admission
from api.claims import warm_checker
from api.database import UNAVAILABLE, migrate
from api.dependencies import Passes
from api.hardening import BodyLimit, SecurityHeaders, invalid_request
from api.queries import NotPublished
from api.routes import audit, campaigns, cases, claims, models, providers, reference, reports
from api.web.pages import SignIn
from api.web.session import Cookies
from api.worklist import Worklists
from rules.durable_worker import WorkerUnavailable
from secm.settings import get_settings

log = logging.getLogger(__name__)


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail},
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1", "Cache-Control": "no-store"},
    )


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", str(exc).splitlines()[0])
    return _unavailable("The database is unavailable; retry shortly")


async def _rules_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("rule engine unavailable: %s", exc)
    return _unavailable("The rule engine is being restarted; retry shortly")


async def _not_published(_: Request, exc: Exception) -> JSONResponse:
    """What documents and campaigns cannot find in the published runs is a 404 that says so."""
    return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)


async def _sign_in(request: Request, _: Exception) -> RedirectResponse:
    """A workbench page without a valid session sends the browser to sign in."""
    return RedirectResponse("/signin", status.HTTP_303_SEE_OTHER)


def create_app(
    database_url: str,
    *,
    concurrency: int = 4,
    queue_seconds: float = 2.0,
    queue_length: int = 1000,
    max_body_bytes: int = 16 * 1024 * 1024,
    token_recheck_seconds: float = 1.0,
    check_concurrency: int = 32,
    pseudonym_key: bytes | None = None,
    session_key: bytes | None = None,
    session_hours: float = 8.0,
) -> FastAPI:
    """The service over ``database_url``; ``concurrency`` requests at work at once (see the
    module); request bodies up to ``max_body_bytes``; a token admitted is read again after
    ``token_recheck_seconds`` (see ``api.dependencies``); ``check_concurrency`` claim checks
    waiting for their batch at once, beside the others (see ``api.admission``)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threads = anyio.to_thread.current_default_thread_limiter()
        # Each claim check waits for its batch in a thread of its own.
        threads.total_tokens = max(threads.total_tokens, 2 * concurrency + check_concurrency + 8)
        try:
            await anyio.to_thread.run_sync(app.state.worklists.warm, app.state.engine)
            await anyio.to_thread.run_sync(warm_checker, app.state.engine, app.state.checkers)
        except UNAVAILABLE as exc:  # the service starts all the same, and reads it when it can
            log.warning("could not read the newest run at start: %s", str(exc).splitlines()[0])
        yield
        # Its connections closed as it stops, not whenever the app is collected (which, frozen
        # with the claim checkers' reference data, it never is: see ``checker_for``).
        app.state.engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="secm",
        summary="Billing control for the Belgian health insurance: flagged providers, evidence, cases.",
        version="0.1.0",
        responses={
            401: {"description": "Missing, invalid or revoked bearer token"},
            403: {"description": "The token's role may not use this endpoint"},
            404: {"description": "Unknown run, provider or case"},
            409: {"description": "A case change the case's state does not allow"},
            503: {
                "description": "Saturated, or the database or rule engine is unavailable; retry after Retry-After seconds"
            },
        },
    )
    app.state.engine = migrate(database_url, pool_size=concurrency, pool_timeout=queue_seconds)
    app.state.worklists = Worklists()
    app.state.passes = Passes(token_recheck_seconds)
    app.state.checkers = {}
    app.state.pseudonym_key = pseudonym_key or get_settings().pseudonym_secret
    app.state.cookies = Cookies(session_key or get_settings().session_secret, session_hours)
    # The last added runs first: headers on every answer, then the body limit, then admission.
    app.add_middleware(
        Admission,
        limit=concurrency,
        wait=queue_seconds,
        queue=queue_length,
        lanes={"/claims/check": check_concurrency},
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(SecurityHeaders)
    for error in UNAVAILABLE:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(WorkerUnavailable, _rules_unavailable)
    app.add_exception_handler(NotPublished, _not_published)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(SignIn, _sign_in)
    for module in (reference, providers, claims, cases, campaigns, reports, models, audit):
        app.include_router(module.router)
    app.include_router(web.router)
    return app


def from_settings() -> FastAPI:
    """The service as the environment configures it (``SECM_*``): the server processes' factory."""
    settings = get_settings()
    return create_app(
        settings.effective_database_url,
        concurrency=settings.serve_concurrency,
        queue_seconds=settings.serve_queue_seconds,
        queue_length=settings.serve_queue_length,
        max_body_bytes=settings.serve_max_body_bytes,
        token_recheck_seconds=settings.serve_token_recheck_seconds,
        check_concurrency=settings.serve_check_concurrency,
        pseudonym_key=settings.pseudonym_secret,
        session_key=settings.session_secret,
        session_hours=settings.session_hours,
    )

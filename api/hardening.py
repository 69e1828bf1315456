"""What users of a claims service expect of it beyond its answers: bounded request bodies
(413 with a message), headers that keep answers out of caches, frames and MIME sniffing, and
validation errors that can always be answered.

The first two are ASGI middlewares, so that they hold for every route, error and 503 alike.
"""

from __future__ import annotations

import json
import math
from typing import Any, cast

from fastapi import Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# The JSON API needs no scripts, styles or frames at all.
API_POLICY = b"default-src 'none'; frame-ancestors 'none'"
# Documents written for people (feedback profiles) carry their styles and SVG charts inline,
# and still no script.
DOCUMENT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
# The workbench's pages: the same, their peer charts are images of the service, and their
# forms post to the service only.
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; form-action 'self'"
)
# The interactive documentation loads Swagger UI / ReDoc from their CDN.
DOCS_POLICY = (
    b"default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    b"img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    b"font-src https://fonts.gstatic.com; connect-src 'self'; worker-src blob:; frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"The request body exceeds {limit:,} bytes; send smaller batches"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:  # bytes: ASCII digits only
                await _too_large(send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        # No length announced (chunked): read the body up to the limit, then replay it.
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class SecurityHeaders:
    """Add the security headers, a Content-Security-Policy and ``Cache-Control: no-store``
    (answers hold claim lines and case notes), unless the route set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"] in DOCS_PATHS else API_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", policy))
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422, but answerable whatever was sent: Python's JSON reader takes
    ``NaN``, ``Infinity`` and ``1e400``, which an error quoting its input cannot render."""
    errors = cast(RequestValidationError, exc).errors()  # registered for it alone
    return JSONResponse({"detail": _finite(jsonable_encoder(errors))}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float written as text (``"nan"``, ``"inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value

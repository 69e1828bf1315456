"""Admission control: a bounded number of requests at work per process, the rest answered 503.

A request that is let in holds at most one database connection and one worker thread at a
time, so with at most ``limit`` requests inside the application, a pool of ``limit``
connections and at least ``limit`` threads, no request ever waits for a connection held by
a request that is itself waiting for a thread. The requests beyond the limit wait on the
event loop (no thread, no connection) for at most ``wait`` seconds, in arrival order; past
that, or when ``queue`` requests are already waiting, they are answered at once with 503
and ``Retry-After`` instead of hanging.
"""

from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

# Liveness must answer even when the service is saturated.
UNLIMITED_PATHS = frozenset({"/health"})


async def busy(send: Send, message: str, retry_after: int = 1) -> None:
    """Answer 503 with a JSON ``detail`` and ``Retry-After``, as FastAPI's own errors are shaped."""
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Admission:
    """ASGI middleware letting at most ``limit`` requests in at once (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, limit: int, wait: float, queue: int) -> None:
        self.app = app
        self.limit = limit
        self.wait = wait
        self.queue = queue
        self.waiting = 0
        self._slots: anyio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # created on the serving event loop
            self._slots = anyio.Semaphore(self.limit, fast_acquire=True)
        slots = self._slots
        if slots.value == 0:
            if self.waiting >= self.queue:
                await busy(send, f"The service is saturated ({self.waiting} requests waiting); retry shortly")
                return
            self.waiting += 1
            try:
                with anyio.move_on_after(self.wait) as waited:
                    await slots.acquire()
            finally:
                self.waiting -= 1
            if waited.cancelled_caught:
                await busy(send, f"The service is saturated (no answer slot within {self.wait:g} s); retry shortly")
                return
        else:
            await slots.acquire()
        try:
            await self.app(scope, receive, send)
        finally:
            slots.release()

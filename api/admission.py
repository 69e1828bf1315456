"""Admission control: a bounded number of requests at work per process, the rest answered 503.

A request that is let in holds at most one database connection and one worker thread at a
time, so with at most ``limit`` requests inside the application, a pool of ``limit``
connections and at least ``limit`` threads, no request ever waits for a connection held by
a request that is itself waiting for a thread. The requests beyond the limit wait on the
event loop (no thread, no connection) for at most ``wait`` seconds, in arrival order; past
that, or when ``queue`` requests are already waiting, they are answered at once with 503
and ``Retry-After`` instead of hanging.

A path may have a lane of its own (``lanes``): its requests are counted against their own
limit, not the others'. Real-time claim checks have one: they wait for their batch without a
database connection (see ``api.claims``), and the more of them wait together, the larger the
batch and the fewer the batches.
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


class _Gate:
    """At most ``limit`` requests in at once; the rest wait in arrival order, within bounds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0
        self.slots: anyio.Semaphore | None = None


class Admission:
    """ASGI middleware letting at most ``limit`` requests in at once (see the module's docstring)."""

    def __init__(
        self, app: ASGIApp, *, limit: int, wait: float, queue: int, lanes: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.wait = wait
        self.queue = queue
        self.gate = _Gate(limit)
        self.lanes = {path: _Gate(n) for path, n in (lanes or {}).items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        gate = self.lanes.get(scope["path"], self.gate)
        if gate.slots is None:  # created on the serving event loop
            gate.slots = anyio.Semaphore(gate.limit, fast_acquire=True)
        slots = gate.slots
        if slots.value == 0:
            if gate.waiting >= self.queue:
                await busy(send, f"The service is saturated ({gate.waiting} requests waiting); retry shortly")
                return
            gate.waiting += 1
            try:
                with anyio.move_on_after(self.wait) as waited:
                    await slots.acquire()
            finally:
                gate.waiting -= 1
            if waited.cancelled_caught:
                await busy(send, f"The service is saturated (no answer slot within {self.wait:g} s); retry shortly")
                return
        else:
            await slots.acquire()
        try:
            await self.app(scope, receive, send)
        finally:
            slots.release()

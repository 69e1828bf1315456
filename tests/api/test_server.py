"""`secm serve` says it serves only once its processes answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from api.server import when_ready


@contextmanager
def health(failures: int) -> Iterator[int]:
    """A server on a free port whose ``/health`` answers 503 ``failures`` times, then 200."""
    asked = [0]

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked[0] += 1
            self.send_response(200 if asked[0] > failures else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _outcome(port: int, processes: int, limit: float) -> list[bool]:
    said: list[bool] = []
    done = threading.Event()

    def then(ready: bool) -> None:
        said.append(ready)
        done.set()

    when_ready("127.0.0.1", port, processes, then, limit=limit)
    assert done.wait(limit + 5)
    return said


def test_ready_once_every_process_answers() -> None:
    with health(failures=3) as port:
        assert _outcome(port, processes=2, limit=30) == [True]


def test_not_ready_when_the_processes_never_answer() -> None:
    with health(failures=10**6) as port:
        assert _outcome(port, processes=2, limit=1.0) == [False]

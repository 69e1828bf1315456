"""Running the service in several processes behind one port, with connections spread evenly.

uvicorn's workers share one listening socket, and whichever wakes first accepts a whole burst
of waiting connections: 200 keep-alive clients connecting at once split 132 / 68 between two
workers, and the clients of the busier one wait twice as long. Here each worker listens on
a socket of its own in one ``SO_REUSEPORT`` group, so the kernel spreads new connections over
the workers evenly. uvicorn still supervises them (signals, graceful shutdown, health checks);
a worker that dies is replaced by one that listens on every socket, so none goes unserved.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess
from uvicorn.supervisors.multiprocess import Process

APP = "api.app:from_settings"
BACKLOG = 2048  # uvicorn's default


class PortInUse(ValueError):
    """The port asked for is taken by another program."""


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``host:port`` in one ``SO_REUSEPORT`` group.

    A plain bind is tried first: ``SO_REUSEPORT`` alone would let a second server of the same
    user join the group on a port already taken and silently share its traffic.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    sockets = []
    for _ in range(count):
        sock = socket.socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        # Listening already, a worker still starting has its share of connections queued
        # for it, instead of the first worker up taking them all.
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


class EvenWorkers(Multiprocess):
    """uvicorn's supervisor, starting each worker on a socket of its own (see the module)."""

    def init_processes(self) -> None:
        for sock in self.sockets:
            process = Process(self.config, [sock])
            process.start()
            self.processes.append(process)


def when_ready(host: str, port: int, processes: int, then: Callable[[bool], None], limit: float = 300.0) -> None:
    """Call ``then(True)`` in a thread once every process answers ``/health`` (each reads the
    newest run and starts its rules workers before it answers: seconds), ``then(False)`` if
    they do not within ``limit`` seconds. The kernel spreads new connections over the
    processes, so ``4 × processes`` answers in a row, each within a second, stand for all."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    def answers() -> bool:
        connection = http.client.HTTPConnection(target, port, timeout=1.0)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def wait() -> None:
        deadline, in_a_row = time.monotonic() + limit, 0
        while in_a_row < 4 * processes:
            if time.monotonic() > deadline:
                then(False)
                return
            in_a_row = in_a_row + 1 if answers() else 0
            if not in_a_row:
                time.sleep(0.2)
        then(True)

    threading.Thread(target=wait, name="ready", daemon=True).start()


def serve(sockets: list[socket.socket], **options: object) -> None:
    """Serve the application factory ``APP`` on ``sockets`` (see :func:`listening_sockets`),
    one process each, until SIGTERM or Ctrl-C; ``options`` go to ``uvicorn.Config``."""
    config = uvicorn.Config(APP, factory=True, workers=len(sockets), **options)  # type: ignore[arg-type]
    if len(sockets) > 1:
        EvenWorkers(config, sockets).run()
        return
    server = uvicorn.Server(config)
    server.run(sockets)
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)

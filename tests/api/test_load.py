"""The real server under 200 concurrent clients: every request answered, none slow, no deadlock."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import psutil

from api.auth import create_token
from api.database import migrate
from bench.service import drive, serving
from tests.api.conftest import Published


def test_two_hundred_clients_are_all_answered_within_five_seconds(results: Published, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    results.into(url)
    _, token = create_token(migrate(url), "inspector", "load")
    providers = results.scores["provider_nihdi"].unique().sort().to_list()

    def request(rng: random.Random) -> tuple[str, dict[str, object]]:
        if rng.random() < 0.5:
            return "/providers/flagged", {"sort": rng.choice(["amount", "score"]), "page": rng.randint(1, 3)}
        return f"/providers/{rng.choice(providers)}", {}

    with serving(str(tmp_path), url, workers=2) as (base, _):
        load = drive(base, token, request, clients=200, seconds=4, timeout=5)
    summary = load.summary()
    assert summary["errors"] == 0, summary
    assert summary["requests"] > 200, summary
    assert summary["max_ms"] < 5_000, summary


def test_connections_are_spread_evenly_over_the_workers(tmp_path: Path) -> None:
    """200 clients connecting at once: each of two workers holds 35 to 65 % of them (with one
    shared socket, the worker that woke first took about two thirds)."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    with serving(str(tmp_path), url, workers=2) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        try:
            for client in clients:
                client.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            for client in clients:
                assert client.recv(4096).startswith(b"HTTP/1.1 200")
            # Only these clients' connections: the service's own readiness check may still hold one.
            ours = {client.getsockname()[1] for client in clients}
            held = [
                sum(
                    1
                    for c in worker.net_connections("tcp")
                    if c.laddr.port == port and c.status == "ESTABLISHED" and c.raddr and c.raddr.port in ours
                )
                for worker in psutil.Process(server.pid).children()
            ]
        finally:
            for client in clients:
                client.close()
    workers = [n for n in held if n]
    assert len(workers) == 2, held
    assert sum(workers) == 200, held
    assert all(70 <= n <= 130 for n in workers), held

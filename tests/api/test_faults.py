"""Faults the service must survive: a publish killed half-way, a stop with requests in
flight, the database going away and coming back."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import psutil
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_token
from api.database import migrate
from bench.service import free_port, serving
from tests.api.conftest import POSTGRES, Published, claim_line, postgres_schema_url, rows_of

PUBLISH = """
import sys
from api.publish import publish
from bench.service import synthetic_results
frames = synthetic_results(600_000, 20_000)
print("publishing", flush=True)
info = {"run_id": "killed", "created_at": "2026-03-01T00:00:00+00:00", "legislation": "current", "rules": {}}
publish(sys.argv[1], info, references={}, **frames)
print("published", flush=True)
"""


def test_a_publish_killed_half_way_leaves_the_previous_run_served(database_url: str, results: Published) -> None:
    results.into(database_url, run_id="first")
    with subprocess.Popen([sys.executable, "-c", PUBLISH, database_url], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "publishing"
        time.sleep(1.0)  # a publish of this size takes several seconds on either back end
        assert child.poll() is None, "the publish ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdout.read() == ""  # it never reported the publish done

    assert set(rows_of(database_url, "killed").values()) == {0}
    assert rows_of(database_url, "first")["flags"] == results.flags.height
    _, token = create_token(migrate(database_url), "inspector", "after-kill")
    with TestClient(create_app(database_url)) as client:
        runs = client.get("/runs", headers={"Authorization": f"Bearer {token}"}).json()
    assert [r["run_id"] for r in runs] == ["first"]


def _accepted(server: subprocess.Popen[bytes], port: int) -> int:
    """Connections to ``port`` that the service (the process or its workers) has accepted."""
    main = psutil.Process(server.pid)
    return sum(
        1
        for process in (main, *main.children(recursive=True))
        for connection in process.net_connections("tcp")
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    )


def test_a_stop_finishes_the_requests_in_flight(results: Published, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    results.into(url)
    _, token = create_token(migrate(url), "inspector", "stop")
    lines = results.references["providers"]  # any provider will do for a batch of checks
    nihdi = str(lines["provider_nihdi"][0])
    batch = [
        {
            "claim_id": f"S{i:07d}",
            "provider_nihdi": nihdi,
            "patient_id": f"PSS{i:07d}",
            "insurer_code": "100",
            "nomenclature_code": "101076",
            "service_date": "2024-03-01",
            "service_time": f"{8 + i % 10:02d}:{i % 60:02d}:00",
            "channel": "eattest",
            "submitted_date": "2024-03-02",
            "amount_fee": 30.0,
            "amount_reimbursed": 22.5,
        }
        for i in range(1500)
    ]
    with serving(str(tmp_path), url, workers=1) as (base, server):
        headers = {"Authorization": f"Bearer {token}"}

        def check() -> tuple[int, float]:
            started = time.perf_counter()
            answer = httpx2.post(f"{base}/claims/check", json={"lines": batch}, headers=headers, timeout=60)
            return answer.status_code, time.perf_counter() - started

        with ThreadPoolExecutor(6) as pool:
            # One provider's checks are decided one after the other: most are still in flight.
            pending = [pool.submit(check) for _ in range(6)]
            # A request the service has not accepted yet is not in flight: on a busy machine the
            # stop could come first, and that connection be refused.
            port = int(base.rsplit(":", 1)[1])
            deadline = time.monotonic() + 30
            while _accepted(server, port) < len(pending) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
            assert sum(not p.done() for p in pending) >= 3, "the checks ended before the stop"
            server.send_signal(signal.SIGTERM)
            answers = [p.result() for p in pending]
        assert [status for status, _ in answers] == [200] * 6
        # uvicorn shuts down gracefully, then exits by the signal it caught.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)


class Proxy:
    """A TCP relay to the database: stopping it is the database going away for the service."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def stop(self) -> None:
        for s in [self.listener, *self.sockets]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass


@pytest.fixture
def proxied() -> Iterator[tuple[Proxy, str]]:
    """A PostgreSQL schema reached through a :class:`Proxy` (the outage is a server's fault)."""
    schema = postgres_schema_url()
    url = next(schema)
    server = POSTGRES.split("@")[1].split("/")[0]
    host, port = server.split(":")
    proxy = Proxy((host, int(port)))
    proxy.start()
    try:
        yield proxy, url.replace(server, f"127.0.0.1:{proxy.port}")
    finally:
        proxy.stop()
        next(schema, None)


def test_the_database_going_away_gives_503s_and_the_service_recovers(
    proxied: tuple[Proxy, str], results: Published
) -> None:
    proxy, url = proxied
    results.into(url)
    _, token = create_token(migrate(url), "inspector", "outage")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(url)) as client:
        assert client.get("/providers/flagged", headers=headers).status_code == 200
        proxy.stop()
        during = client.get("/runs", headers=headers)  # the worklist pages answer from memory
        assert during.status_code == 503
        assert during.headers["retry-after"] == "1"
        assert "database is unavailable" in during.json()["detail"]
        proxy.start()
        assert client.get("/runs", headers=headers).status_code == 200
        after = client.get("/providers/flagged", headers=headers)
        assert after.status_code == 200
        assert after.json()["total"] > 0


def _rules_workers(server: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The durable_rules worker processes under the server (started by multiprocessing's spawn)."""
    found = []
    for child in psutil.Process(server.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
    return found


def test_a_rules_worker_killed_under_load_costs_503s_at_most_never_a_wrong_answer(
    results: Published, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    results.into(url)
    _, token = create_token(migrate(url), "inspector", "kill-worker")
    providers = ["11003065005", "11005342005", "11007322004"]  # GPs with no suspension, debt or status
    stop = threading.Event()
    answers: list[tuple[int, dict[str, object]]] = []

    def client(k: int) -> None:
        with httpx2.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            n = 0
            while not stop.is_set():
                n += 1
                claim = f"K{k}-{n}"
                lines = [
                    claim_line(claim + "a", providers[k % 3]),
                    claim_line(claim + "b", providers[k % 3], service_date="2021-03-15"),
                ]
                response = http.post(f"{base}/claims/check", json={"lines": lines})
                json_body = response.headers.get("content-type", "").startswith("application/json")
                answers.append((response.status_code, response.json() if json_body else {"text": response.text}))

    with serving(str(tmp_path), url, workers=1) as (base, server):
        with ThreadPoolExecutor(6) as pool:
            running = [pool.submit(client, k) for k in range(6)]
            deadline = time.monotonic() + 60
            while not _rules_workers(server) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.0)
            killed = _rules_workers(server)
            assert killed, "no rules worker to kill"
            for worker in killed:
                worker.kill()
            answered_before = len(answers)
            time.sleep(8.0)
            stop.set()
            for done in running:
                done.result()
        replacements = {w.pid for w in _rules_workers(server)} - {w.pid for w in killed}
    assert replacements, "the killed worker was not replaced"
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert sum(1 for status, _ in answers[answered_before:] if status == 200) > 0
    for status, answer in answers:
        if status == 200:
            claims = {c["claim_id"]: [f["rule_id"] for f in c["flags"]] for c in answer["claims"]}  # type: ignore[union-attr]
            assert sorted(claims.values()) == [[], ["LATE_ATTESTATION"]], answer
            assert all(claims[c] == (["LATE_ATTESTATION"] if c.endswith("b") else []) for c in claims)

"""The service in a process of its own, and concurrent clients to load it (benchmarks and load tests).

``serving`` starts ``secm serve`` on a free port and waits until it answers; ``drive`` runs
many concurrent keep-alive clients on one event loop (threads cannot keep 200 clients busy
from one process on two cores) and reports throughput, latency percentiles and every error by
kind (any answer but 200, a broken connection, or no answer within the timeout).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httptools
import httpx2
import numpy as np
import polars as pl

from detectors.indicators import LEVELS, SHARES
from rules import load_catalog


def synthetic_results(n_flags: int, n_providers: int, seed: int = 1, groups: int = 1) -> dict[str, pl.DataFrame]:
    """Results of a run of ``n_flags`` flags over ``n_providers`` providers in ``groups`` peer
    groups, as ``publish`` takes them (no reference tables): a large publish without generating
    and running a dataset. Profiles carry every scored indicator, drawn at random."""
    rules = [rule.id for rule in load_catalog()]
    rng = np.random.default_rng(seed)
    providers = np.array([f"{10_000_000 + i:08d}{rng.integers(0, 999):03d}" for i in range(n_providers)])
    who = rng.zipf(1.6, n_flags) % n_providers
    days = rng.integers(0, 730, n_flags)
    flags = pl.DataFrame(
        {
            "claim_id": [f"C{i:011d}" for i in range(n_flags)],
            "rule_id": np.array(rules)[rng.integers(0, len(rules), n_flags)],
            "provider_nihdi": providers[who],
            "reason": "bench",
            "amount_at_stake_eur": rng.gamma(2.0, 20.0, n_flags).round(2),
            "service_date": [date(2023, 1, 1) + timedelta(days=int(d)) for d in days],
            "insurer_code": np.array(["100", "200", "300", "500", "600"])[rng.integers(0, 5, n_flags)],
            "channel": "efact",
            "nomenclature_code": "101076",
            "profession": "gp",
            "region": np.array(["BRU", "VLA", "WAL"])[who % 3],
            "severity": "medium",
            "legal_basis": "bench",
            "evidence": '{"bench": true}',
        }
    )
    group = np.arange(n_providers) % groups
    scores = pl.DataFrame(
        {
            "provider_nihdi": providers,
            "peer_group": [f"gp|003|G{g}" for g in group],
            "score": rng.random(n_providers),
            "explanation": "share of evening codes: 0.4 against a peer median of 0.05",
            "period": "2024",
            "peer_group_size": np.bincount(group)[group],
            "contributions": '[{"feature":"evening_share","value":0.4,"peer_median":0.05}]',
        }
    ).with_columns(
        pl.col("score").rank("ordinal", descending=True).cast(pl.Int64).alias("rank"),
        (pl.col("score") > 0.9).cast(pl.Int64).alias("top_decile_streak"),
    )
    lines = rng.integers(10, 9000, n_providers)
    profiles = pl.DataFrame(
        {
            "provider_nihdi": providers,
            "period": "2024",
            "profession": "gp",
            "region": np.array(["BRU", "VLA", "WAL"])[np.arange(n_providers) % 3],
            "lines": lines,
            "patients": np.maximum(1, lines // rng.integers(2, 6, n_providers)),
            **{feature: rng.beta(2, 8, n_providers) for feature in SHARES},
            **{feature: rng.lognormal(1.0, 0.4, n_providers) for feature in LEVELS},
        }
    )
    quarantine = pl.DataFrame(schema={"table": pl.String, "reasons": pl.List(pl.String)})
    return {"flags": flags, "scores": scores, "profiles": profiles, "quarantine": quarantine}


# A request to send: (path, query parameters) for a GET, or (path, query parameters, JSON body)
# for a POST, drawn from a seeded random generator.
Request = Callable[[random.Random], tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], bytes]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(
    home: str, database_url: str, port: int | None = None, workers: int | None = None, log: Any = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``secm serve`` until the block ends: its base URL once it answers, and the process."""
    port = port or free_port()
    env = {**os.environ, "SECM_HOME": home, "SECM_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "secm.cli", "serve", "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=log or subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                raise RuntimeError(f"secm serve exited with code {server.returncode}")
            try:
                if httpx2.get(f"{base}/health").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"secm serve did not answer on {base} within 60 s")
        yield base, server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                raise RuntimeError("secm serve did not stop within 30 s of SIGTERM; killed") from None


@dataclass
class Load:
    """What a load produced: per answered request its latency and status; failures by kind."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    # Paced only: per request that fell due while its client still waited for the answer
    # before, how long after it was due it was sent (its latency counts that wait).
    behind: list[float] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """Requests not answered 200 (statuses) or not answered at all (failures)."""
        return sum(n for s, n in self.statuses.items() if s != 200) + sum(self.failures.values())

    def summary(self) -> dict[str, Any]:
        ms = np.array(self.latencies or [0.0]) * 1000
        return {
            "requests": len(self.latencies),
            "requests_per_second": round(len(self.latencies) / self.seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(ms.max()), 1),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(self.failures),
            **(self._behind() if self.behind else {}),
        }

    def _behind(self) -> dict[str, Any]:
        """How many paced requests waited for their own client's answer before, and how long:
        a client holds one connection, so part of a paced p99 is a claim queued behind its
        client's last one."""
        ms = np.array(self.behind) * 1000
        return {
            "behind_own_previous": round(len(self.behind) / max(1, len(self.latencies)), 3),
            "behind_p50_ms": round(float(np.percentile(ms, 50)), 1),
            "behind_p99_ms": round(float(np.percentile(ms, 99)), 1),
        }


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending a request at a time; httptools parses the answers.

    The load generator shares the machine's cores with the server it measures: aiohttp's
    client took 0.7 ms of CPU per request (40 % of a core at 600 requests/s), this 0.08 ms.
    """

    def __init__(self, headers: bytes) -> None:
        self.headers = headers
        self.parser = httptools.HttpResponseParser(self)
        self.answered: asyncio.Future[int] | None = None
        self.retry_after = 1.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = float(value)

    def on_message_complete(self) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(self.parser.get_status_code())

    def _fail(self, exc: Exception) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(exc)

    async def send(self, target: bytes, body: bytes | None = None) -> int:
        """The status of ``GET target`` (``POST`` with a JSON ``body``), once its whole answer has arrived."""
        assert self.transport is not None
        self.answered = asyncio.get_running_loop().create_future()
        if body is None:
            self.transport.write(b"GET " + target + b" HTTP/1.1\r\n" + self.headers)
        else:
            length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
            self.transport.write(b"POST " + target + b" HTTP/1.1\r\n" + length + self.headers + body)
        return await self.answered


async def _drive(
    base: str, token: str, request: Request, clients: int, seconds: float, timeout: float, rate: float | None
) -> Load:
    load = Load(seconds)
    deadline = time.perf_counter() + seconds
    host, port = base.removeprefix("http://").rsplit(":", 1)
    headers = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = None
        due = time.perf_counter()
        while time.perf_counter() < deadline:
            path, params, *body = request(rng)
            target = (f"{path}?{urlencode(params)}" if params else path).encode()
            if rate is None:
                started = time.perf_counter()
            else:
                # Paced: requests fall due at random (Poisson) times, whenever the answers come.
                # A request's latency counts from when it was due, so a slow answer that delays
                # this client's next request counts against the service, not for it.
                due += rng.expovariate(rate / clients)
                ahead = due - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                else:
                    load.behind.append(-ahead)
                started = due
            try:
                async with asyncio.timeout(timeout):
                    if connection is None or connection.transport is None or connection.transport.is_closing():
                        _, connection = await loop.create_connection(lambda: _Connection(headers), host, int(port))
                    status = await connection.send(target, *body)
            except (TimeoutError, OSError, httptools.HttpParserError) as exc:
                load.failures[type(exc).__name__] += 1
                if connection is not None and connection.transport is not None:
                    connection.transport.close()
                connection = None
                continue
            load.statuses[status] += 1
            if status == 503:
                # An overloaded service says when to come back; a client honours it.
                await asyncio.sleep(connection.retry_after)
                continue
            load.latencies.append(time.perf_counter() - started)
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return load


def drive(
    base: str,
    token: str,
    request: Request,
    *,
    clients: int,
    seconds: float,
    timeout: float = 10.0,
    rate: float | None = None,
) -> Load:
    """``clients`` concurrent clients sending ``request``s for ``seconds``: back to back (as fast as
    the service answers), or, given a ``rate``, that many requests a second in all, each client
    sending its share at random times, as independent submitters do (an open load: the service
    must keep up, and its latencies count from when each request was due)."""
    return asyncio.run(_drive(base, token, request, clients, seconds, timeout, rate))


def busy_seconds() -> float:
    """CPU seconds this machine has spent busy since it started, on every core (``/proc/stat``:
    user, nice, system, irq and softirq time). Counts a run's every process, a Spark JVM and
    its Python workers included, where the run's own usage would miss what it does not wait
    for; so the machine must be otherwise idle."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@contextmanager
def fresh_database(server: str | None, home: str, name: str) -> Iterator[str]:
    """A fresh application database: a SQLite file in ``home``, or a schema of its own on the
    PostgreSQL ``server``, dropped when the block ends."""
    if server is None:
        yield f"sqlite:///{Path(home) / 'secm.db'}"
        return
    import psycopg

    schema = f"{name}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")

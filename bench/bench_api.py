"""Latency and throughput of the service's list and detail endpoints under concurrent load.

    uv run python bench/bench_api.py --flags 1000000 --providers 50000 [--database-url URL]

Publishes a run of ``--flags`` flags over ``--providers`` providers (built directly, not by
the pipeline) into a fresh SQLite file (or the given database), serves it with uvicorn in
one process and loads it from a second process with ``--workers`` concurrent clients.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from rules import load_catalog

RULES = [rule.id for rule in load_catalog()]


def _results(n_flags: int, n_providers: int, seed: int = 1) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    providers = np.array([f"{10_000_000 + i:08d}{rng.integers(0, 999):03d}" for i in range(n_providers)])
    who = rng.zipf(1.6, n_flags) % n_providers
    days = rng.integers(0, 730, n_flags)
    flags = pl.DataFrame(
        {
            "claim_id": [f"C{i:011d}" for i in range(n_flags)],
            "rule_id": np.array(RULES)[rng.integers(0, len(RULES), n_flags)],
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
    scores = pl.DataFrame(
        {
            "provider_nihdi": providers,
            "peer_group": "gp|003|BRU",
            "score": rng.random(n_providers),
            "explanation": "share of evening codes: 0.4 against a peer median of 0.05",
            "period": "2024",
            "peer_group_size": 500,
            "contributions": '[{"feature":"evening_share","value":0.4,"peer_median":0.05}]',
        }
    ).with_columns(pl.col("score").rank("ordinal", descending=True).cast(pl.Int64).alias("rank"))
    profiles = pl.DataFrame(
        {"provider_nihdi": providers, "period": "2024", "lines": rng.integers(10, 9000, n_providers)}
    )
    quarantine = pl.DataFrame(schema={"table": pl.String, "reasons": pl.List(pl.String)})
    return {"flags": flags, "scores": scores, "profiles": profiles, "quarantine": quarantine}


def _load(base: str, token: str, providers: list[str], seconds: float, workers: int, queue: mp.Queue) -> None:
    import httpx2

    latencies: dict[str, list[float]] = {"list": [], "detail": []}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            while time.perf_counter() < deadline:
                if rng.random() < 0.5:
                    kind = "list"
                    params = {"sort": rng.choice(["amount", "score", "lines"]), "page": rng.randint(1, 20)}
                    if rng.random() < 0.5:
                        params["rule"] = rng.choice(RULES)
                    if rng.random() < 0.3:
                        params["region"] = rng.choice(["BRU", "VLA", "WAL"])
                    started = time.perf_counter()
                    response = client.get("/providers/flagged", params=params)
                else:
                    kind = "detail"
                    started = time.perf_counter()
                    response = client.get(f"/providers/{rng.choice(providers)}")
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                with lock:
                    latencies[kind].append(elapsed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = {}
    for kind, values in latencies.items():
        ms = np.array(values) * 1000
        report[kind] = {
            "requests": len(values),
            "requests_per_second": len(values) / seconds,
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
        }
    queue.put(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flags", type=int, default=1_000_000)
    parser.add_argument("--providers", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=4, help="Concurrent clients.")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database-url", help="Default: a fresh SQLite file.")
    args = parser.parse_args()

    from service import serving

    from api.auth import create_token
    from api.database import migrate
    from api.publish import publish

    with tempfile.TemporaryDirectory() as home:
        url = args.database_url or f"sqlite:///{Path(home) / 'secm.db'}"
        frames = _results(args.flags, args.providers)
        info = {"run_id": "bench", "created_at": "2026-01-01T00:00:00+00:00", "legislation": "current", "rules": {}}
        started = time.perf_counter()
        publish(url, info, references={}, **frames)
        published = time.perf_counter() - started
        _, token = create_token(migrate(url), "inspector", f"bench-{os.getpid()}")
        with serving(home, url, args.port) as base:
            providers = frames["scores"]["provider_nihdi"].sample(2000, seed=1).to_list()
            spawn = mp.get_context("spawn")
            queue = spawn.Queue()
            loader = spawn.Process(target=_load, args=(base, token, providers, args.seconds, args.workers, queue))
            loader.start()
            report = queue.get()
            loader.join()
    print(
        json.dumps(
            {
                "flags": args.flags,
                "providers": args.providers,
                "database": url.split(":", 1)[0],
                "publish_seconds": published,
                "clients": args.workers,
                **report,
            },
            indent=2,
            default=lambda v: round(v, 2),
        )
    )


if __name__ == "__main__":
    main()

"""Real-time claim checks through POST /claims/check against the batch engine, per line.

    uv run python bench/bench_claims.py --lines 200000 --seconds 20

Generates and runs a dataset (published to a fresh SQLite file), serves it, then posts
claims of that dataset one request per claim from a second process for ``--seconds``;
prints claims/s and per-claim latency, and the batch engine's time per line on the same data.
Then posts batches of ``--same-key`` sizes whose lines all share one duplicate key (copies of
one claim), the worst case of the duplicate rule, and prints each batch's seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _post(base: str, token: str, claims: list[dict], seconds: float, queue: mp.Queue) -> None:
    import httpx2

    latencies = []
    deadline = time.perf_counter() + seconds
    with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for claim in claims:
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            response = client.post("/claims/check", json={"lines": [claim]})
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    ms = np.array(latencies) * 1000
    queue.put(
        {
            "claims": len(latencies),
            "claims_per_second": len(latencies) / ms.sum() * 1000,
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }
    )


def _same_key(base: str, token: str, claim: dict, sizes: list[int]) -> dict[int, float]:
    """Seconds to check a batch of ``n`` copies of ``claim`` (one duplicate key), per size."""
    import httpx2

    seconds = {}
    with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600) as client:
        for n in sizes:
            lines = [{**claim, "claim_id": f"same-{n}-{i}"} for i in range(n)]
            started = time.perf_counter()
            response = client.post("/claims/check", json={"lines": lines})
            seconds[n] = time.perf_counter() - started
            assert response.status_code == 200, response.text
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--same-key", default="250,500,1000,2000", help="Batch sizes sharing one duplicate key.")
    args = parser.parse_args()

    import polars as pl
    from service import serving

    from api.auth import create_token
    from api.database import migrate
    from data_contracts import load_dataset
    from rules import enriched_lines, evaluate
    from secm.pipeline import run
    from secm.synth import generate

    with tempfile.TemporaryDirectory() as home:
        os.environ["SECM_HOME"] = home  # the run's MLflow store and files stay in the temporary home
        data, url = Path(home) / "data", f"sqlite:///{Path(home) / 'secm.db'}"
        generate(data, n_lines=args.lines, seed=3)
        run(data, Path(home) / "out", publish_to=url)
        tables = load_dataset(data).lazy_tables()
        started = time.perf_counter()
        lines = enriched_lines(tables)
        evaluate(tables, lines=lines)
        batch_seconds = time.perf_counter() - started
        raw = tables["billing_lines"].filter(pl.col("invoice_id").is_null()).collect().sample(5000, seed=1)
        claims = json.loads(raw.write_json())
        _, token = create_token(migrate(url), "inspector", "bench")
        with serving(home, url, args.port) as (base, _):
            spawn = mp.get_context("spawn")
            queue = spawn.Queue()
            poster = spawn.Process(target=_post, args=(base, token, claims, args.seconds, queue))
            poster.start()
            report = queue.get()
            poster.join()
            same_key = _same_key(base, token, claims[0], [int(n) for n in args.same_key.split(",") if n])
    batch_per_line_us = batch_seconds / lines.height * 1e6
    print(
        json.dumps(
            {
                "lines": lines.height,
                "endpoint": report,
                "batch_engine": {"seconds": batch_seconds, "per_line_microseconds": batch_per_line_us},
                "endpoint_p50_over_batch_per_line": report["p50_ms"] * 1000 / batch_per_line_us,
                "same_key_batch_seconds": same_key,
            },
            indent=2,
            default=lambda v: round(v, 3),
        )
    )


if __name__ == "__main__":
    main()

"""Real-time claim checks through POST /claims/check: latency and throughput by concurrency.

    uv run python bench/bench_claims.py --lines 200000 --seconds 20
    uv run python bench/bench_claims.py ... --database-url postgresql://postgres@127.0.0.1:5432/test

Generates and runs a dataset, published to a fresh SQLite file or to a schema of its own on
the PostgreSQL server ``--database-url`` (the service's history then lives there too).
Profiles ``--profile`` single-claim checks in this process (milliseconds per check by
stage), then serves it. From a second process, ``--clients`` levels each post claims of that
dataset, one claim per request, for ``--seconds``: 1, 8 and 32 clients posting back to back
(as fast as the service answers), then 32 clients posting 500 claims a second in all, at
random times, as a national flow of independent submitters does. Prints claims/s, latency
percentiles and the machine's busy cores per level (a paced level's latencies count from
when each claim was due; ``behind_own_previous`` is the share of its claims that fell due
while their client still waited for its answer before, ``behind_p50_ms`` / ``behind_p99_ms``
how long after they were due they were sent), and the batch engine's time per line on the
same data. Then posts ``--batch`` claims in one request (``--batch-repeats`` times) and
batches of ``--same-key`` sizes whose lines all share one duplicate key (copies of one
claim), the worst case of the duplicate rule, and prints their seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any


def _load(
    base: str, token: str, bodies: list[bytes], clients: int, rate: float | None, seconds: float, queue: mp.Queue
) -> None:
    """Runs in a process of its own: ``clients`` clients posting ``bodies`` at random, back to
    back or ``rate`` claims a second in all (see ``service.drive``)."""
    from service import busy_seconds, drive

    def request(rng: random.Random) -> tuple[str, dict[str, Any], bytes]:
        return "/claims/check", {}, rng.choice(bodies)

    busy = busy_seconds()
    load = drive(base, token, request, clients=clients, seconds=seconds, timeout=30.0, rate=rate)
    summary = load.summary()
    # The machine's, these clients included: how near the cores are to full.
    summary["cores_busy"] = (busy_seconds() - busy) / seconds
    summary["claims_per_second"] = summary.pop("requests_per_second")
    queue.put(summary)


STAGES = {  # (module path suffix, function) -> stage of a check, as cProfile names them
    ("api/claims.py", "_validate"): "validation (records checked one by one, as the contract's loader would)",
    ("rules/records.py", "bearing_on"): "choice of the recent lines that bear on the claim",
    ("rules/records.py", "enrich"): "enrichment (look-ups in the reference tables' indexes)",
    ("rules/durable_worker.py", "run"): "rules worker (hop there and back, rule evaluation)",
    ("api/claims.py", "check"): "whole check",
}


def _stages(checker: Any, claims: list[dict], n: int) -> dict[str, float]:
    """Milliseconds per single-claim check spent in each stage, by cProfile, in this process:
    in the thread that checks, and in the checker's rules thread (the choice of the lines,
    their enrichment and the rules worker run there while the history's transaction ends)."""
    import cProfile
    import pstats

    for claim in claims[:20]:
        checker.check([claim], [], "profile")
    here, rules = cProfile.Profile(), cProfile.Profile()  # a profiler sees its own thread only
    checker.rules_thread.submit(rules.enable).result()
    here.enable()
    for claim in claims[20 : 20 + n]:
        checker.check([claim], [], "profile")
    here.disable()
    checker.rules_thread.submit(rules.disable).result()
    spent: dict[str, float] = {}
    stats = pstats.Stats(here).add(rules)
    for (path, _, function), (*_, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for (suffix, name), stage in STAGES.items():
            if function == name and path.endswith(suffix):
                spent[stage] = spent.get(stage, 0.0) + cumulative * 1000 / n
    return spent


def _batches(base: str, token: str, batches: dict[str, list[dict]]) -> dict[str, float]:
    """Seconds to check each batch of lines in one request."""
    import httpx2

    seconds = {}
    with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600) as client:
        for name, lines in batches.items():
            started = time.perf_counter()
            response = client.post("/claims/check", json={"lines": lines})
            seconds[name] = time.perf_counter() - started
            assert response.status_code == 200, response.text
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--clients",
        default="1,8,32,32@500",
        help="Levels of load, one after the other: N clients posting back to back, or N@R for N clients "
        "posting R claims a second in all, at random times (a paced, open load).",
    )
    parser.add_argument("--workers", type=int, help="Processes of the service (default: secm serve's).")
    parser.add_argument("--batch", type=int, default=1000, help="Lines of the one-request batch.")
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--same-key", default="250,500,1000,2000", help="Batch sizes sharing one duplicate key.")
    parser.add_argument("--profile", type=int, default=200, help="Single-claim checks profiled in process (0: none).")
    parser.add_argument("--database-url", help="A PostgreSQL server (default: a fresh SQLite file).")
    args = parser.parse_args()

    import polars as pl
    from service import fresh_database, serving

    from api.auth import create_token
    from api.database import migrate
    from data_contracts import load_dataset
    from rules import enriched_lines, evaluate
    from secm.pipeline import run
    from secm.synth import generate

    with tempfile.TemporaryDirectory() as home, fresh_database(args.database_url, home, "bench_claims") as url:
        os.environ["SECM_HOME"] = home  # the run's MLflow store and files stay in the temporary home
        data = Path(home) / "data"
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
        bodies = [json.dumps({"lines": [claim]}).encode() for claim in claims]
        levels = {}
        batch = claims[1000 : 1000 + args.batch]
        batches = {f"batch {args.batch} #{i + 1}": batch for i in range(args.batch_repeats)}
        batches |= {
            f"same key {n}": [{**claims[0], "claim_id": f"same-{n}-{i}"} for i in range(n)]
            for n in (int(n) for n in args.same_key.split(",") if n)
        }
        stages = {}
        if args.profile:
            from api.claims import checker_for

            engine = migrate(url)
            run_id = json.loads((Path(home) / "out" / "run.json").read_text())["run_id"]
            stages = _stages(checker_for(engine, run_id, {}), claims[2500:], args.profile)
        with serving(home, url, args.port, workers=args.workers) as (base, _):
            spawn = mp.get_context("spawn")
            for level in (n for n in args.clients.split(",") if n):
                clients, _, rate = level.partition("@")
                queue = spawn.Queue()
                paced = float(rate) if rate else None
                load = (base, token, bodies, int(clients), paced, args.seconds, queue)
                poster = spawn.Process(target=_load, args=load)
                poster.start()
                levels[f"{clients} clients" + (f" at {rate} claims/s" if rate else "")] = queue.get()
                poster.join()
            batch_seconds_by_name = _batches(base, token, batches)
    batch_per_line_us = batch_seconds / lines.height * 1e6
    print(
        json.dumps(
            {
                "lines": lines.height,
                "single_claims": levels,
                "single_claim_stages_ms": stages,
                "batch_engine": {"seconds": batch_seconds, "per_line_microseconds": batch_per_line_us},
                "one_request_batches_seconds": batch_seconds_by_name,
            },
            indent=2,
            default=lambda v: round(v, 3),
        )
    )


if __name__ == "__main__":
    main()

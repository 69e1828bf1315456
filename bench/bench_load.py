"""The service under load: many concurrent clients on the list and provider pages, with a publish.

    uv run python bench/bench_load.py --clients 200 --seconds 60 --workers 2 --publish-during
    uv run python bench/bench_load.py ... --database-url postgresql://postgres@127.0.0.1:5432/test

Publishes a run of ``--flags`` flags over ``--providers`` providers (built directly, not by
the pipeline) into a fresh SQLite file (or, on the given PostgreSQL server, a schema of its
own, dropped afterwards), serves it with
``secm serve --workers N`` and drives ``--clients`` concurrent clients from this process;
with ``--publish-during``, a second process publishes another run halfway through. Prints
requests/s, latency percentiles and errors (any answer but 200, or none within 10 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import tempfile
import time

from service import Request, drive, fresh_database, serving, synthetic_results

from rules import load_catalog

RULES = [rule.id for rule in load_catalog()]


def _publish_later(url: str, frames: dict, delay: float, done: mp.Queue[float]) -> None:
    """Publish a second run ``delay`` seconds into the load, as a ``secm run`` would."""
    from api.publish import publish

    time.sleep(delay)
    started = time.perf_counter()
    info = {"run_id": "bench-2", "created_at": "2026-01-02T00:00:00+00:00", "legislation": "current", "rules": {}}
    publish(url, info, references={}, **frames)
    done.put(time.perf_counter() - started)


def _request(providers: list[str]) -> Request:
    """Half list pages (random sort, page and filters), half provider pages."""

    def request(rng: random.Random) -> tuple[str, dict[str, object]]:
        if rng.random() < 0.5:
            params: dict[str, object] = {"sort": rng.choice(["amount", "score", "lines"]), "page": rng.randint(1, 20)}
            if rng.random() < 0.5:
                params["rule"] = rng.choice(RULES)
            if rng.random() < 0.3:
                params["region"] = rng.choice(["BRU", "VLA", "WAL"])
            return "/providers/flagged", params
        return f"/providers/{rng.choice(providers)}", {}

    return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flags", type=int, default=1_000_000)
    parser.add_argument("--providers", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=200, help="Concurrent clients.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=None, help="secm serve --workers (default: its own).")
    parser.add_argument("--publish-during", action="store_true", help="Publish a second run halfway through.")
    parser.add_argument("--database-url", help="A PostgreSQL server (default: a fresh SQLite file).")
    args = parser.parse_args()

    from api.auth import create_token
    from api.database import migrate
    from api.publish import publish

    with tempfile.TemporaryDirectory() as home, fresh_database(args.database_url, home, "bench_load") as url:
        frames = synthetic_results(args.flags, args.providers)
        info = {"run_id": "bench", "created_at": "2026-01-01T00:00:00+00:00", "legislation": "current", "rules": {}}
        started = time.perf_counter()
        publish(url, info, references={}, **frames)
        published = time.perf_counter() - started
        _, token = create_token(migrate(url), "inspector", f"bench-{os.getpid()}")
        providers = frames["scores"]["provider_nihdi"].sample(2000, seed=1).to_list()
        with serving(home, url, workers=args.workers) as (base, _):
            spawn = mp.get_context("spawn")
            done: mp.Queue[float] = spawn.Queue()
            publisher = None
            if args.publish_during:
                publisher = spawn.Process(target=_publish_later, args=(url, frames, args.seconds / 2, done))
                publisher.start()
            load = drive(base, token, _request(providers), clients=args.clients, seconds=args.seconds)
            second = None
            if publisher is not None:
                second = done.get()
                publisher.join()
            report = {
                "flags": args.flags,
                "providers": args.providers,
                "database": url.split(":", 1)[0],
                "publish_seconds": round(published, 2),
                "publish_during_load_seconds": second and round(second, 2),
                "clients": args.clients,
                "server_workers": args.workers,
                "seconds": args.seconds,
                **load.summary(),
            }
            print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    main()

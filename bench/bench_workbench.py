"""How fast the workbench's pages render, on the API benchmark's scale of data.

    uv run python bench/bench_workbench.py --flags 1000000 --providers 50000 --groups 100

Publishes a run of ``--flags`` flags over ``--providers`` providers in ``--groups`` peer
groups into a fresh SQLite file, serves it with ``secm serve``, signs in as an inspector
through the sign-in form, then asks one page at a time (so the time is the server's): worklist
pages with random sorts, pages and filters, and provider pages of random providers, each
provider asked once (no page is served from a cache it filled itself). After each provider
page it fetches, as a browser would, the page's peer charts it has not fetched before (a
browser keeps them: they are the same for every member of a peer group). Prints p50, p95 and
p99 per kind: the worklist, the provider page, each chart, and the provider page with the
charts it needed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx2
from service import serving, synthetic_results

from rules import load_catalog

RULES = [rule.id for rule in load_catalog()]
CHART = re.compile(r'<image href="([^"]+)"')


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "n": len(ordered),
        "p50_ms": round(at(0.5), 1),
        "p95_ms": round(at(0.95), 1),
        "p99_ms": round(at(0.99), 1),
        "mean_ms": round(statistics.mean(ordered) * 1000, 1),
    }


def _measure(base: str, token: str, providers: list[str], pages: int) -> dict[str, list[float]]:
    """Sign in through the form, then ask ``pages`` worklist and provider pages one at a time."""
    rng = random.Random(7)
    timings: dict[str, list[float]] = {"worklist": [], "provider": [], "chart": [], "provider_with_charts": []}
    seen: set[str] = set()
    with httpx2.Client(base_url=base, timeout=60) as client:
        form = client.get("/signin").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)  # type: ignore[union-attr]
        client.post("/signin", data={"token": token, "csrf": csrf})
        client.get("/workbench/worklist")  # the run's worklist is read once per process
        for number in range(pages):
            params: dict[str, object] = {
                "sort": rng.choice(["amount", "score", "lines", "persistence"]),
                "page": rng.randint(1, 40),
            }
            if rng.random() < 0.5:
                params["rule"] = rng.choice(RULES)
            if rng.random() < 0.3:
                params["region"] = rng.choice(["BRU", "VLA", "WAL"])
            for kind, path, query in (
                ("worklist", "/workbench/worklist", params),
                ("provider", f"/workbench/providers/{providers[number * 97 % len(providers)]}", {}),
            ):
                asked = time.perf_counter()
                answer = _get(client, path, query)
                timings[kind].append(time.perf_counter() - asked)
                if kind == "provider":
                    for chart in CHART.findall(answer.text):
                        if chart not in seen:
                            seen.add(chart)
                            drawn = time.perf_counter()
                            _get(client, chart.replace("&amp;", "&"), {})
                            timings["chart"].append(time.perf_counter() - drawn)
                    timings["provider_with_charts"].append(time.perf_counter() - asked)
    return timings


def _get(client: httpx2.Client, path: str, query: dict[str, object]) -> httpx2.Response:
    answer = client.get(path, params=query or None)
    if answer.status_code != 200:
        raise SystemExit(f"{path}: {answer.status_code} {answer.text[:200]}")
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flags", type=int, default=1_000_000)
    parser.add_argument("--providers", type=int, default=50_000)
    parser.add_argument("--groups", type=int, default=100, help="Peer groups the providers fall in.")
    parser.add_argument("--pages", type=int, default=200, help="Pages of each kind to ask for.")
    args = parser.parse_args()

    from api.auth import create_token
    from api.database import migrate
    from api.publish import publish

    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{home}/secm.db"
        started = time.perf_counter()
        frames = synthetic_results(args.flags, args.providers, groups=args.groups)
        info = {"run_id": "bench-1", "created_at": "2026-01-01T00:00:00+00:00", "legislation": "current", "rules": {}}
        publish(url, info, references={}, **frames)
        token = create_token(migrate(url), "inspector", "bench")[1]
        print(
            f"published {args.flags:,} flags over {args.providers:,} providers in {time.perf_counter() - started:.1f}s"
        )
        providers = frames["scores"]["provider_nihdi"].to_list()
        with (Path(home) / "serve.log").open("w") as log, serving(home, url, log=log) as (base, _):
            timings = _measure(base, token, providers, args.pages)
        print(json.dumps({kind: _percentiles(seconds) for kind, seconds in timings.items()}, indent=2))


if __name__ == "__main__":
    main()

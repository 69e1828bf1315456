"""Throughput and peak memory of generation, load + validate, and the rule stage; the whole
``secm run`` (start-up, partitions, scoring, outputs, publish to SQLite and, given a server,
to PostgreSQL); then, on a sample, the same rules per line on durable_rules and by hand in
pandas against Polars.

Each stage runs in its own process so that its peak RSS is its own:

    uv run python bench/bench_pipeline.py --lines 10000000 --sample 1000000
    uv run python bench/bench_pipeline.py --data DATASET --sample 0 --stages run \
        --partitions 1,2 --database-url postgresql://postgres@127.0.0.1:5432/test

A two-core machine's wall times drift by a tenth from one hour to the next, more than most
changes save. ``--repeat N`` runs every configuration N times, in rounds (each configuration
once per round), and summarises each; ``--against TREE`` adds the same runs of the code in
another source tree (say a ``git worktree`` of the commit before a change), in turn with this
checkout's, so that a before and after see the same hours:

    git worktree add /tmp/before HEAD~1
    uv run python bench/bench_pipeline.py --data DATASET --sample 0 --stages run \
        --repeat 5 --against /tmp/before
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import Any

from service import busy_seconds, fresh_database

THIS = "this checkout"  # the code of the runs that are not --against's


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate_dataset(out: str, lines: int, queue: mp.Queue) -> None:
    from secm.synth import generate

    started = time.perf_counter()
    generate(Path(out), n_lines=lines, seed=20261123)
    queue.put({"seconds": time.perf_counter() - started, "peak_rss_mb": _peak_mb()})


def _pipeline(out: str, queue: mp.Queue) -> None:
    """Load, enrich and evaluate under ``current``; then the reform on the same enriched
    lines. With the generator's labels, whether each legislation's flags match them exactly."""
    from data_contracts import load_dataset
    from rules import enriched_lines, evaluate
    from secm.synth.labels import mismatches

    started = time.perf_counter()
    dataset = load_dataset(out)
    loaded = time.perf_counter()
    tables = dataset.lazy_tables()
    lines = enriched_lines(tables)
    flags = evaluate(tables, lines=lines)
    done = time.perf_counter()
    reform = evaluate(tables, lines=lines, legislation="reform_art174")
    reformed = time.perf_counter()
    report: dict[str, Any] = {
        "load_validate_seconds": loaded - started,
        "rules_seconds": done - loaded,
        "reform_rules_seconds_on_enriched_lines": reformed - done,
        "total_seconds": done - started,
        "lines": dataset.stats["billing_lines"].rows_read,
        "flags": flags.height,
        "reform_flags": reform.height,
        "peak_rss_mb": _peak_mb(),
    }
    if (Path(out) / "labels" / "flags.parquet").exists():
        report["labels_recovered_exactly"] = {
            legislation: mismatches(found, Path(out), legislation).is_empty()
            for legislation, found in (("current", flags), ("reform_art174", reform))
        }
    queue.put(report)


def _compare(out: str, sample: int, queue: mp.Queue) -> None:
    import polars as pl
    from pandas_rules import pandas_flags

    from data_contracts import load_dataset
    from rules import enriched_lines, evaluate
    from rules.durable_engine import evaluate_durable

    tables = load_dataset(out).lazy_tables()
    everything = enriched_lines(tables)
    # Whole providers, those with flags first, so that the sample keeps every join and flag.
    flagged = evaluate(tables, lines=everything).select("provider_nihdi").unique().with_columns(pl.lit(0).alias("_o"))
    providers = (
        everything.group_by("provider_nihdi")
        .len()
        .join(flagged, on="provider_nihdi", how="left")
        .sort(pl.col("_o").fill_null(1), "provider_nihdi")
        .filter(pl.col("len").cum_sum() <= sample)
    )
    lines = everything.join(providers.select("provider_nihdi"), on="provider_nihdi", how="semi")
    lines = lines.drop("_i").with_row_index("_i")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    polars_flags = evaluate(tables, lines=lines)
    timings["polars"] = time.perf_counter() - started
    started = time.perf_counter()
    references = ("tp_suspensions", "provider_debts", "provider_status")
    frames = [lines.to_pandas(), *(tables[t].collect().to_pandas() for t in references)]
    timings["pandas_conversion"] = time.perf_counter() - started
    started = time.perf_counter()
    by_pandas = pandas_flags(*frames)
    timings["pandas"] = time.perf_counter() - started
    started = time.perf_counter()
    durable_flags = evaluate_durable(tables, lines=lines)
    timings["durable_rules"] = time.perf_counter() - started
    expected = set(zip(polars_flags["claim_id"], polars_flags["rule_id"], strict=True))
    queue.put(
        {
            "lines": lines.height,
            "flags": len(expected),
            "seconds": timings,
            "lines_per_second": {k: lines.height / v for k, v in timings.items() if k != "pandas_conversion"},
            "slower_than_polars": {k: v / timings["polars"] for k, v in timings.items() if k != "polars"},
            "same_flags": {
                "pandas": by_pandas == expected,
                "durable_rules": durable_flags.equals(polars_flags),
            },
        }
    )


def secm_run(
    data: str, partitions: str, database_url: str, home: str, *options: str, code: Path | None = None
) -> dict[str, object]:
    """``secm run`` as a user types it (with ``options``), in a process of its own: wall time,
    peak RSS (of it and of what it started, a Spark JVM included), the machine's CPU time
    meanwhile and the stage timings it records. ``code``: a source tree whose packages run
    instead of this checkout's (first on the path, with this environment's dependencies)."""
    out = Path(home) / "out"
    command = [str(Path(sys.executable).parent / "secm"), "run", "--data", data, "--out", str(out), *options]
    env = {**os.environ, "SECM_HOME": home, "SECM_DATABASE_URL": database_url}
    if code is not None:
        env["PYTHONPATH"] = str(code.resolve())
    if partitions != "auto":
        command += ["--partitions", partitions]
    errors = Path(home) / "stderr.log"  # a file: a pipe nobody reads would stall a chatty run
    with errors.open("wb") as stderr:
        started, busy = time.perf_counter(), busy_seconds()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        seconds, cpu = time.perf_counter() - started, busy_seconds() - busy
    if status != 0:
        raise SystemExit(f"secm run failed: {errors.read_text(errors='replace')}")
    info = json.loads((out / "run.json").read_text())
    lines = info["tables"]["billing_lines"]["rows_read"]
    return {
        "partitions": info["partitions"],
        "wall_seconds": seconds,
        "lines_per_second": lines / seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_seconds": cpu,
        "cores_busy": cpu / seconds,
        "stages": info["timings"],
    }


def summary(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per configuration (the values of ``keys``), the runs' wall times (least, median, most),
    the median throughput and the highest peak RSS."""
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(tuple(run[k] for k in keys), []).append(run)
    rows = []
    for configuration, group in grouped.items():
        walls = sorted(run["wall_seconds"] for run in group)
        rows.append(
            {
                **dict(zip(keys, configuration, strict=True)),
                "runs": len(group),
                "wall_seconds": {"least": walls[0], "median": statistics.median(walls), "most": walls[-1]},
                "lines_per_second_median": statistics.median(run["lines_per_second"] for run in group),
                "peak_rss_mb_most": max(run["peak_rss_mb"] for run in group),
            }
        )
    return rows


def saved(runs: list[dict[str, Any]], against: str) -> list[dict[str, Any]]:
    """Per database and partitions, the seconds this checkout's run took less than the run of
    the tree ``against`` in the same round, round by round and their median: runs in turn are
    compared with their neighbour, whose hour they shared, rather than with every other."""
    walls = {(run["code"], run["database"], run["partitions"], run["round"]): run["wall_seconds"] for run in runs}
    rows: dict[tuple[Any, ...], list[float]] = {}
    for (code, database, partitions, number), wall in walls.items():
        if code == against:
            rows.setdefault((database, partitions), []).append(wall - walls[THIS, database, partitions, number])
    return [
        {"database": database, "partitions": partitions, "by_round": by_round, "median": statistics.median(by_round)}
        for (database, partitions), by_round in rows.items()
    ]


def in_process(target, *args):  # type: ignore[no-untyped-def]
    queue: mp.Queue = mp.Queue()
    process = mp.get_context("fork").Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, help="Reuse a generated dataset instead of generating one.")
    parser.add_argument("--sample", type=int, default=1_000_000, help="Lines for the back-end comparison (0: skip).")
    parser.add_argument(
        "--stages",
        default="rules,run",
        help="Of rules (load and rules in process) and run (secm run); comma-separated.",
    )
    parser.add_argument(
        "--partitions", default="auto", help="secm run --partitions, comma-separated (auto: its default)."
    )
    parser.add_argument("--database-url", help="Also publish to this PostgreSQL server, in a schema of its own.")
    parser.add_argument("--repeat", type=int, default=1, help="Rounds of secm run: each configuration once a round.")
    parser.add_argument(
        "--against", type=Path, help="A source tree whose secm run runs in turn with this checkout's (same rounds)."
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.against is not None and not (args.against / "secm" / "cli.py").is_file():
        parser.error(f"--against {args.against}: not a source tree of this project (no secm/cli.py)")
    stages = set(args.stages.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        data = str(args.data or Path(tmp) / "data")
        report: dict[str, object] = {"lines": args.lines} if args.data is None else {"dataset": str(args.data)}
        if args.data is None:
            gen = in_process(generate_dataset, data, args.lines)
            report["generate"] = {**gen, "lines_per_second": args.lines / gen["seconds"]}
        if "rules" in stages:
            run = in_process(_pipeline, data)
            n = run["lines"]
            report["pipeline"] = {
                **run,
                "load_validate_lines_per_second": n / run["load_validate_seconds"],
                "rules_lines_per_second": n / run["rules_seconds"],
                "end_to_end_lines_per_second": n / run["total_seconds"],
            }
        if "run" in stages:
            report["secm_run"] = runs = []
            servers = {"sqlite": None, **({"postgresql": args.database_url} if args.database_url else {})}
            codes = {THIS: None, **({str(args.against): args.against} if args.against else {})}
            configurations = list(product(servers.items(), args.partitions.split(","), codes.items()))
            for number in range(1, args.repeat + 1):
                for (name, server), partitions, (label, code) in configurations:
                    with (
                        tempfile.TemporaryDirectory(dir=tmp) as home,
                        fresh_database(server, home, "bench_pipeline") as url,
                    ):
                        result = secm_run(data, partitions, url, home, code=code)
                        runs.append({"code": label, "database": name, "round": number, **result})
                    print(
                        f"round {number}/{args.repeat}: {label}, {name}: {result['wall_seconds']:.1f} s",
                        file=sys.stderr,
                    )
            if args.repeat > 1 or args.against:
                report["secm_run_summary"] = summary(runs, ("code", "database", "partitions"))
            if args.against:
                report["secm_run_saved"] = saved(runs, str(args.against))
        if args.sample:
            report["backends_on_sample"] = in_process(_compare, data, args.sample)
    print(json.dumps(report, indent=2, default=lambda v: round(v, 2)))


if __name__ == "__main__":
    main()

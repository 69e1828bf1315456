"""``secm run --engine spark`` against the Polars engine on the same dataset, in the same run.

    uv run python bench/bench_spark.py --lines 10000000
    uv run python bench/bench_spark.py --data DATASET --masters "local[1],local[2]"

Generates a dataset (or takes ``--data``), then runs the whole ``secm run`` as typed, each in
a process of its own (start-up, Spark's included, outputs, publish to a fresh SQLite file):
once on the Polars engine, then on Spark for each ``--masters`` (the scaling from one core to
two). Prints wall time, lines/s, peak RSS, the machine's CPU time (``bench_pipeline.secm_run``)
and the stage timings of each, and for each Spark
run its throughput as a ratio of the Polars engine's and whether its flags and quarantine are
the Polars engine's exactly.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl
from bench_pipeline import generate_dataset, in_process, secm_run
from service import fresh_database

COMPARED = ("flags", "quarantine")  # outputs each Spark run must give exactly as the Polars engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--data", type=Path, help="Reuse a generated dataset instead of generating one.")
    parser.add_argument("--masters", default="local[1],local[2]", help="Spark masters, comma-separated.")
    parser.add_argument("--partitions", default="auto", help="secm run --partitions (auto: its default).")
    parser.add_argument("--legislation", default="current", help="secm run --legislation.")
    args = parser.parse_args()
    legislation = ("--legislation", args.legislation)
    with tempfile.TemporaryDirectory() as tmp:
        data = str(args.data or Path(tmp) / "data")
        report: dict[str, object] = {"lines": args.lines} if args.data is None else {"dataset": str(args.data)}
        if args.data is None:
            report["generate"] = in_process(generate_dataset, data, args.lines)
        runs = [("polars", ())] + [
            (master, ("--engine", "spark", "--spark-master", master)) for master in args.masters.split(",")
        ]
        report["runs"] = results = []
        outputs: dict[str, pl.DataFrame] = {}
        for name, options in runs:
            with tempfile.TemporaryDirectory(dir=tmp) as home, fresh_database(None, home, "bench_spark") as url:
                result = {"engine": name, **secm_run(data, args.partitions, url, home, *options, *legislation)}
                mine = {output: pl.read_parquet(Path(home) / "out" / f"{output}.parquet") for output in COMPARED}
                if outputs:
                    result["throughput_against_polars"] = result["lines_per_second"] / results[0]["lines_per_second"]
                    result["same_flags_and_quarantine_as_polars"] = all(mine[o].equals(outputs[o]) for o in COMPARED)
                outputs = outputs or mine
                results.append(result)
    print(json.dumps(report, indent=2, default=lambda v: round(v, 2)))


if __name__ == "__main__":
    main()

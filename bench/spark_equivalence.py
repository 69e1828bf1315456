"""Every rule-boundary dataset of the test suite through ``secm run`` in memory and on Spark.

    uv run python bench/spark_equivalence.py [--draws 100] [--master "local[2]"]

The rules' tests build small datasets around the contract's boundaries (a deadline's last day,
a burst's fifth visit, a debt's threshold...) and check the Polars and durable_rules engines
on each. This runs those tests (``tests/rules``) once to keep each dataset they build, adds
``--draws`` datasets drawn by ``tests.boundaries``, then runs each dataset through the whole
``secm run`` in memory and on Spark under the current legislation, ``reform_art174`` and the
version its test used, and compares flags and quarantine exactly. Too long for the suite (a
few seconds a Spark run); the suite runs the boundary strategies and pinned examples on Spark.
Prints one line per difference and a JSON summary; exits 1 if any run differs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from rich.progress import Progress

from secm.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import factories  # noqa: E402  (the project's tests, from its root)

COMPARED = ("flags", "quarantine")
Version = tuple[str, date | None]  # legislation, effective from
LEGISLATIONS: list[Version] = [("current", None), ("reform_art174", None)]


class Keeper:
    """A pytest plugin keeping a copy of each dataset ``tests.factories.flags`` evaluates, with
    the legislation its test asked for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.kept: list[tuple[Path, Version]] = []

    def pytest_configure(self, config: pytest.Config) -> None:
        evaluate = factories.flags

        def keeping(
            root: Path, legislation: str = "current", effective_from: date | None = None, **tables: Any
        ) -> pl.DataFrame:
            found = evaluate(root, legislation, effective_from, **tables)
            copy = self.folder / f"rules-{len(self.kept):03d}"
            shutil.copytree(root, copy)
            self.kept.append((copy, (legislation, effective_from)))
            return found

        factories.flags = keeping  # before the test modules import it


def drawn(count: int, folder: Path) -> list[Path]:
    """``count`` datasets drawn around the rules' boundaries (``tests.boundaries``). Hypothesis
    is imported once pytest has run: pytest rewrites its assertions when it imports it."""
    from hypothesis import HealthCheck, given, settings

    from tests.boundaries import datasets

    written: list[Path] = []

    @given(dataset=datasets())
    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    def keep(dataset: dict[str, Any]) -> None:
        written.append(factories.write_dataset(folder / f"drawn-{len(written):03d}", **dataset))

    keep()
    return written


def differences(data: Path, work: Path, version: Version, master: str) -> list[str]:
    """The outputs of ``COMPARED`` that differ between a run in memory and one on Spark."""
    legislation, effective_from = version
    whole, spark = work / "whole", work / "spark"
    run(data, whole, legislation=legislation, effective_from=effective_from, partitions=1)
    run(
        data,
        spark,
        legislation=legislation,
        effective_from=effective_from,
        partitions=2,
        engine="spark",
        spark_master=master,
    )
    found = [
        o
        for o in COMPARED
        if not pl.read_parquet(spark / f"{o}.parquet").equals(pl.read_parquet(whole / f"{o}.parquet"))
    ]
    shutil.rmtree(work)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=100, help="Datasets drawn by tests.boundaries.")
    parser.add_argument("--master", default="local[2]", help="The Spark master.")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keeper = Keeper(folder)
        if pytest.main(["-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "rules")], plugins=[keeper]) != 0:
            sys.exit("the rules' tests failed: their datasets are not a basis for comparison")
        cases = [(data, {*LEGISLATIONS, version}) for data, version in keeper.kept]
        cases += [(data, set(LEGISLATIONS)) for data in drawn(args.draws, folder)]
        runs = sum(len(versions) for _, versions in cases)
        differing: list[dict[str, Any]] = []
        with Progress() as progress:
            task = progress.add_task("In memory and on Spark", total=runs)
            for data, versions in cases:
                for version in sorted(versions, key=str):
                    outputs = differences(data, folder / "work", version, args.master)
                    if outputs:
                        differing.append({"dataset": data.name, "version": str(version), "outputs": outputs})
                        progress.console.print(f"{data.name} {version}: {', '.join(outputs)} differ")
                    progress.advance(task)
    summary = {
        "rule_test_datasets": len(keeper.kept),
        "drawn_datasets": args.draws,
        "runs_compared": runs,
        "differing": differing,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, indent=2, default=str))
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()

"""``secm run --engine spark`` submitted as the README says: ``spark-submit`` with the CLI's
module as the application, the master given to ``spark-submit`` and not repeated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

import secm.cli
from secm.pipeline import run
from tests import factories as f
from tests.spark import java_or_skip


def test_spark_submit_runs_the_cli_on_its_master(tmp_path: Path) -> None:
    java_or_skip()
    late = f.line("LATE", channel="paper_cash", service_date=date(2022, 1, 3), submitted_date=date(2024, 6, 3))
    data = f.write_dataset(tmp_path / "data", lines=[late, f.line("ON-TIME")])
    python = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    job = ["run", "--data", str(data), "--out", str(tmp_path / "out"), "--engine", "spark"]
    submitted = subprocess.run(
        [Path(sys.executable).parent / "spark-submit", "--master", "local[3]", secm.cli.__file__, *job],
        env={**os.environ, **python},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (info["engine"], info["partitions"]) == ("spark", 3)  # one per core of local[3], not of local[*]
    flags = pl.read_parquet(tmp_path / "out" / "flags.parquet")
    assert flags.filter(pl.col("rule_id") == "LATE_ATTESTATION")["claim_id"].to_list() == ["LATE"]
    assert_frame_equal(flags, run(data, tmp_path / "whole", partitions=1).flags)

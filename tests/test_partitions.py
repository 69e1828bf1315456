"""A run out of core (billing lines in partitions by provider, one after the other here or side by
side on Spark) gives what a run in memory gives.

The Spark runs need a Java runtime (``tests.spark``)."""

from __future__ import annotations

import errno
import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts import TABLES, load_dataset
from data_contracts.errors import OutputError, writing
from data_contracts.partitions import (
    FILE_COLUMN,
    REREAD_PARTITIONS,
    LinePartitions,
    in_reading_order,
    partitions_for,
)
from data_contracts.references import INVOICE_ROW
from rules import enriched_lines
from secm.pipeline import run
from tests import factories as f
from tests.boundaries import VERSIONS, on_boundary_datasets
from tests.spark import java_or_skip

# What differs between two runs of the same data whatever their partitions.
RUN_SPECIFIC = ("run_id", "created_at", "outputs", "partitions", "engine", "timings")


def _with_hard_cases(synthetic: Path, root: Path, suffix: str = "csv") -> Path:
    """The shared generated dataset plus a part (CSV, or Parquet of text columns) with what
    crosses partitions: claim ids of its lines billed again by another provider, rows that
    fail the contract, unknown and missing providers, an unknown invoice."""
    shutil.copytree(synthetic, root)
    lines = pl.read_parquet(sorted((root / "billing_lines").glob("*.parquet"))[0])
    taken = lines.head(3)
    other = lines.filter(~pl.col("provider_nihdi").is_in(taken["provider_nihdi"].implode()))["provider_nihdi"][0]
    again = taken.with_columns(pl.lit(other).alias("provider_nihdi"))  # the same claim ids, later
    unknown_invoice = taken.head(1).with_columns(
        claim_id=pl.lit("OC-UNKNOWN-INVOICE"),
        invoice_id=pl.lit("INV-UNKNOWN"),
        channel=pl.lit("efact"),
        submitted_date=pl.lit(None, pl.Date),
    )
    broken = [
        f.line("OC-BAD-AMOUNT", amount_reimbursed=99.0, amount_fee=10.0),
        f.line("OC-UNKNOWN", provider_nihdi="19999999999"),
        f.line("OC-NO-PROVIDER", provider_nihdi=None),
        f.line("OC-TWICE"),
        f.line("OC-TWICE", provider_nihdi=f.NURSE),
    ]
    parts = [again, unknown_invoice, pl.DataFrame(broken, schema=TABLES["billing_lines"].dtypes)]
    late = pl.concat([p.select(pl.all().cast(pl.String)) for p in parts], how="diagonal")
    path = root / "billing_lines" / f"zz-late.{suffix}"
    if suffix == "csv":
        late.write_csv(path)
    else:
        late.write_parquet(path)
    return root


def _read(out: Path, name: str) -> list[pl.DataFrame]:
    """An output; a score's contributions as a frame of their own, one row each, whose figures
    compare within floating-point rounding (a list of structs compares exactly)."""
    frame = pl.read_parquet(out / f"{name}.parquet")
    if "contributions" not in frame.columns:
        return [frame]
    decoded = pl.Series("contributions", [json.loads(c) for c in frame["contributions"]])
    return [
        frame.drop("contributions"),
        decoded.to_frame().with_row_index().explode("contributions").unnest("contributions"),
    ]


def _run(data: Path, out: Path, partitions: int, **kw: Any) -> dict[str, Any]:
    info = run(data, out, partitions=partitions, **kw).info
    for name in info["tables"].values():
        name.pop("seconds")
    return {k: v for k, v in info.items() if k not in RUN_SPECIFIC}


@pytest.mark.parametrize(
    ("legislation", "partitions", "engine", "suffix"),
    [
        ("current", 4, "polars", "csv"),  # written out: a CSV file is parsed once
        ("current", 4, "polars", "parquet"),  # Parquet read again for each partition
        ("reform_art174", 3, "polars", "parquet"),
        ("reform_art174", REREAD_PARTITIONS + 1, "polars", "parquet"),  # too many partitions: written out
        ("current", 3, "spark", "csv"),
        ("reform_art174", 2, "spark", "csv"),
    ],
)
def test_partitions_give_the_flags_quarantine_and_counts_of_a_run_in_memory(
    synthetic: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    legislation: str,
    partitions: int,
    engine: str,
    suffix: str,
) -> None:
    if engine == "spark":
        java_or_skip()
        monkeypatch.setattr("secm.spark.ROWS_PER_READ", 7_000)  # the Parquet files read in several slices
    data = _with_hard_cases(synthetic, tmp_path / "data", suffix)
    whole = _run(data, tmp_path / "whole", 1, legislation=legislation)
    split = _run(data, tmp_path / "split", partitions, legislation=legislation, engine=engine, spark_master="local[2]")

    lines = whole["tables"]["billing_lines"]
    assert lines["rows_read"] == lines["rows_valid"] + lines["rows_quarantined"]
    reasons = whole["quarantine_reasons"]
    assert reasons["duplicate_key"] >= 4
    assert reasons["unknown_provider"] >= 1
    assert reasons["missing_provider_nihdi"] >= 1
    assert reasons["unknown_invoice"] >= 1
    assert split == whole  # counts, reasons, rule totals, volumes, software, detector, fairness
    for name in ("flags", "quarantine"):
        assert_frame_equal(*_read(tmp_path / "split", name), *_read(tmp_path / "whole", name))
    # Sums over other partitions are added in another order: the last bits may differ.
    for name in ("profiles", "provider_scores"):
        for split_frame, whole_frame in zip(
            _read(tmp_path / "split", name), _read(tmp_path / "whole", name), strict=True
        ):
            assert_frame_equal(split_frame, whole_frame, check_exact=False)
    assert not list((tmp_path / "split").glob(".partitions-*"))  # the spilled partitions are removed


def test_a_partition_is_enriched_from_the_invoice_rows_its_checks_found(synthetic: Path, tmp_path: Path) -> None:
    """A partition's valid lines end with the row of their invoice that the reference checks
    found; the enrichment reads it and gives what it gives when it looks the ids up."""
    data = _with_hard_cases(synthetic, tmp_path / "data", "parquet")
    dataset = load_dataset(data, without_lines=True)
    split = LinePartitions.split(data, 3, tmp_path / "parts")
    invoices = dataset.tables["third_party_invoices"]
    for rows in split.parts:
        lines, _ = split.load(rows, dataset.tables)
        assert lines.columns[-1] == INVOICE_ROW
        found = lines.select(pl.col("invoice_id").is_not_null().sum(), pl.col(INVOICE_ROW).is_not_null().sum())
        assert found.row(0)[0] == found.row(0)[1] > 0  # every valid line's invoice is found
        read = invoices["invoice_id"].gather(lines[INVOICE_ROW])
        assert read.equals(lines["invoice_id"])
        tables = dataset.lazy_tables()
        by_rows = enriched_lines({**tables, "billing_lines": lines.lazy()})
        by_ids = enriched_lines({**tables, "billing_lines": lines.drop(INVOICE_ROW).lazy()})
        assert_frame_equal(by_rows, by_ids)


@pytest.mark.parametrize("engine", ["polars", "spark"])
def test_a_table_without_lines_in_partitions_is_a_run_without_lines(tmp_path: Path, engine: str) -> None:
    if engine == "spark":
        java_or_skip()
    data = f.write_dataset(tmp_path / "data", lines=[f.line("A")])
    pl.read_parquet(data / "billing_lines.parquet").clear().write_parquet(data / "billing_lines.parquet")
    whole = _run(data, tmp_path / "whole", 1)
    split = _run(data, tmp_path / "split", 2, engine=engine, spark_master="local[2]")
    assert split == whole
    assert whole["tables"]["billing_lines"] == {"rows_read": 0, "rows_valid": 0, "rows_quarantined": 0}
    assert pl.read_parquet(tmp_path / "split" / "flags.parquet").is_empty()


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_every_copy_of_a_claim_id_goes_to_its_first_providers_partition(
    synthetic: Path, tmp_path: Path, suffix: str
) -> None:
    data = _with_hard_cases(synthetic, tmp_path / "data", suffix)
    split = LinePartitions.split(data, 4, tmp_path / "parts")
    assert (tmp_path / "parts").exists() == (suffix == "csv")  # written out only when not read again
    homes = pl.concat(
        part.collect().select("claim_id", "provider_nihdi", pl.lit(i).alias("part"))
        for i, part in enumerate(split.parts)
    )
    assert homes.height == _lines_in(data)  # every line, once
    repeated = homes.filter(pl.col("claim_id").is_duplicated())
    assert repeated["provider_nihdi"].n_unique() > 1  # copies billed by other providers...
    assert (repeated.group_by("claim_id").agg(pl.col("part").n_unique())["part"] == 1).all()  # ...in one partition
    by_provider = (
        homes.filter(~pl.col("claim_id").is_duplicated()).group_by("provider_nihdi").agg(pl.col("part").n_unique())
    )
    assert (by_provider["part"] == 1).all()


def test_a_partition_of_files_read_in_one_scan_is_filtered_in_the_scan(synthetic: Path, tmp_path: Path) -> None:
    """Files of one schema share a scan, and a partition's filter still reaches it: each pass
    decodes only its own rows in full."""
    root = tmp_path / "data"
    shutil.copytree(synthetic, root)
    folder = root / "billing_lines"
    lines = pl.concat([pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], how="vertical_relaxed")
    shutil.rmtree(folder)
    folder.mkdir()
    for i, rows in enumerate(lines.iter_slices(lines.height // 3 + 1)):
        rows.write_parquet(folder / f"part-{i}.parquet")
    split = LinePartitions.split(root, 4, tmp_path / "parts")
    assert sum(part.collect().height for part in split.parts) == lines.height
    for part in split.parts:
        scans = part.explain().split("Parquet SCAN")[1:]
        assert len(scans) == 1  # three files, one scan
        assert "2 other sources" in scans[0].splitlines()[0]
        assert "SELECTION:" in scans[0].split("PLAN")[0]


def test_a_partition_is_put_back_in_reading_order_only_when_it_is_out_of_it() -> None:
    def rows(*keys: tuple[int, int]) -> pl.DataFrame:
        return pl.DataFrame(
            {FILE_COLUMN: [k[0] for k in keys], "_row": [k[1] for k in keys], "claim_id": [f"C{k}" for k in keys]},
            schema_overrides={FILE_COLUMN: pl.UInt32},
        )

    ordered = rows((0, 1), (0, 7), (1, 2), (1, 3))
    assert in_reading_order(ordered) is ordered  # nothing to sort
    # A repeated claim id's rows are written apart, after the partition's own.
    apart = rows((0, 2), (1, 5), (0, 3), (1, 1))
    assert in_reading_order(apart).select(FILE_COLUMN, "_row").rows() == [(0, 2), (0, 3), (1, 1), (1, 5)]
    assert in_reading_order(rows((0, 4), (0, 4))).height == 2  # the same row twice is not lost


def _lines_in(data: Path) -> int:
    folder = data / "billing_lines"
    parquet = sum(pl.read_parquet(p).height for p in folder.glob("*.parquet"))
    return parquet + sum(pl.read_csv(p, infer_schema=False).height for p in folder.glob("*.csv"))


def test_the_number_of_partitions_follows_the_lines(synthetic: Path) -> None:
    lines = _lines_in(synthetic)
    assert partitions_for(synthetic, lines) == 1
    assert partitions_for(synthetic, lines - 1) == 2
    assert partitions_for(synthetic, -(-lines // 10)) == 10  # a tenth, rounded up


@on_boundary_datasets(draws=3)
def test_spark_flags_what_a_run_in_memory_flags_on_the_rules_boundaries(dataset: dict[str, Any]) -> None:
    """The boundary datasets of the back-end equivalence (deadline days, bursts, debt sums...)
    through the whole run, in memory and on Spark, under the current legislation and a dated
    reform."""
    java_or_skip()
    with tempfile.TemporaryDirectory() as tmp:
        data = f.write_dataset(Path(tmp) / "data", **dataset)
        for number, version in enumerate([{"legislation": "current"}, VERSIONS[2]]):
            whole, spark = Path(tmp) / f"whole-{number}", Path(tmp) / f"spark-{number}"
            run(data, whole, partitions=1, **version)
            run(data, spark, partitions=2, engine="spark", spark_master="local[2]", **version)
            for name in ("flags", "quarantine"):
                assert_frame_equal(*_read(spark, name), *_read(whole, name))


def _limited_to(size: int) -> None:
    """In the child process: files of at most ``size`` bytes, a write past it an error (EFBIG)
    rather than the signal that would kill the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.parametrize(
    ("suffix", "partitions"),
    [("csv", 2), ("parquet", REREAD_PARTITIONS + 1)],  # the typed CSV lines; the partitions written out
)
def test_a_partition_that_cannot_be_written_is_one_error_line(
    synthetic: Path, tmp_path: Path, suffix: str, partitions: int
) -> None:
    data = _with_hard_cases(synthetic, tmp_path / "data", suffix)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "secm.cli", "run", "--data", str(data), "--out", str(out), "--no-publish"]
    done = subprocess.run(
        [*command, "--partitions", str(partitions)],
        preexec_fn=partial(_limited_to, 64 * 1024),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(
        # Polars says which OS error its writer met, unless it met it writing a file's footer.
        r"error: Cannot write the billing lines' partitions under \S+/out/\.partitions-\S+: "
        r"(File too large|a Parquet file's footer could not be written \(is the disk full\?\))\n$",
        done.stderr,
    ), done.stderr
    assert list(out.iterdir()) == []  # the partitions' folder is gone with what it held


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (
            pl.exceptions.ComputeError("parquet: underlying IO error: Disk quota exceeded (os error 122)"),
            "Disk quota exceeded",
        ),
        (
            pl.exceptions.ComputeError("parquet: File out of specification: Invalid thrift: transport error"),
            "a Parquet file's footer could not be written (is the disk full?)",
        ),
    ],
)
def test_a_write_that_finds_no_room_names_what_it_was_writing(tmp_path: Path, failure: Exception, reason: str) -> None:
    with (
        pytest.raises(OutputError) as raised,
        writing(tmp_path, "the run's results"),
    ):
        raise failure
    assert str(raised.value) == f"Cannot write the run's results under {tmp_path}: {reason}"


@pytest.mark.parametrize(
    "failure",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        pl.exceptions.ComputeError("could not parse `x` as dtype `i64` at column 'quantity' (os error 2)"),
    ],
)
def test_a_failure_that_is_not_a_write_passes_through(tmp_path: Path, failure: Exception) -> None:
    with pytest.raises(type(failure)) as raised, writing(tmp_path, "the run's results"):
        raise failure
    assert raised.value is failure

"""Billing lines split by provider, so that a run holds one partition in memory at a time.

Every rule looks at one provider's lines (with the reference tables and the invoices), and
so do the profiles, once the few figures that compare providers are summed over the
partitions (:class:`detectors.profiles.ProfileParts`). A partition's lines are typed as the
loader types them and validated as the loader validates the whole table. CSV files are parsed
once, into one Parquet file of typed lines: every pass over text would parse all of it again.
Parquet files are read again for each of a few partitions: the scan tests each row's provider
before it decodes the rest of the row, so a pass costs far less than writing the lines out and
reading them back. Many partitions are read once and written to one Parquet file each.

One check reads across providers: a claim id read a second time is a duplicate, whichever
provider bills it. All the rows of a claim id read more than once therefore go to the
partition of the provider of its first row, so that the loader's own check, run on each
partition in reading order, sees every copy.
"""

from __future__ import annotations

import errno
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import polars as pl

from data_contracts.coerce import coerce_files
from data_contracts.errors import writing
from data_contracts.keys import hash_among, repeated_hashes
from data_contracts.loader import dataset_folder, files_of, quarantine_frame, raw_values_of, unreadable_table, validate
from data_contracts.reader import FILE_COLUMN, SourceFile, row_counts, scan_raw
from data_contracts.schemas import billing_lines_repeating_only
from data_contracts.tables import TABLES, TableSpec

LINES = TABLES["billing_lines"]
LINES_PER_PARTITION = 3_000_000  # a partition of generated lines peaks near 2.7 GB (bench/bench_pipeline.py)
# Up to this many partitions, Parquet lines are read again for each rather than written out.
# Reading and validating 10 million lines took 6.0 s in 4 partitions read again and 7.8 s
# written out; in 8, 7.0-7.3 s and 7.5-7.9 s; in 12 both took about 8 s.
REREAD_PARTITIONS = 8
# What evaluates the partitions: this process one after the other, or Spark tasks (``secm.spark``).
Engine = Literal["polars", "spark"]
PART_COLUMN = "_part"  # the partition a row goes to
TYPED_FILE = "typed-lines.parquet"  # CSV lines, typed, under the partitions' folder
WRITTEN = "the billing lines' partitions"  # what a failed write under the partitions' folder was
# How lines are written under the partitions' folder: to be read back whole, or filtered by a
# hash no statistic can decide. LZ4 is quick both ways; statistics were an eighth of writing.
SPILL_OPTIONS: dict[str, Any] = {"compression": "lz4", "statistics": False}


@contextmanager
def spill_folder(parent: Path) -> Iterator[Path]:
    """A new folder under ``parent`` for a run's partitions and profile parts, removed with
    what it holds however the run ends. When one of Polars' writers fails, the error may
    reach the run while the others are still closing their files there: the removal is
    tried again until they are done (a second at most), so that the write's error is the one
    reported, not a folder that was not empty yet."""
    folder = Path(tempfile.mkdtemp(prefix=".partitions-", dir=parent))
    try:
        yield folder
    finally:
        _remove(folder)


def _remove(folder: Path, tries: int = 50) -> None:
    for _ in range(tries - 1):
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.ENOENT):
                raise
            time.sleep(0.02)
        else:
            return
    shutil.rmtree(folder)


def line_count(root: Path) -> int:
    """How many billing lines the dataset at ``root`` holds, valid or not (Parquet files
    from their metadata; CSV files are counted)."""
    files = files_of(dataset_folder(root), LINES)
    try:
        return sum(row_counts([scan_raw(f) for f in files]))
    except pl.exceptions.PolarsError as exc:
        raise unreadable_table(LINES.name, files, exc) from None


def partitions_for(root: Path, lines_per_partition: int = LINES_PER_PARTITION) -> int:
    """The number of partitions that keeps each near ``lines_per_partition`` lines."""
    return max(1, math.ceil(line_count(root) / lines_per_partition))


def typed_lines(files: list[SourceFile]) -> pl.LazyFrame:
    """The billing lines of ``files``, typed as the loader types them, each with its file's
    number (``FILE_COLUMN``) beside its row."""
    return coerce_files(files, LINES)


def partition_of(provider: pl.Expr, count: int) -> pl.Expr:
    """The partition, of ``count``, of the lines of ``provider``."""
    return provider.hash().mod(count).alias(PART_COLUMN)


def _place_in_files(file: pl.Expr, row: pl.Expr) -> pl.Expr:
    """A row's place among a table's files as one integer: its file's number above its row's
    (below 2**40, a trillion rows a file)."""
    return file.cast(pl.Int64) * 2**40 + row.cast(pl.Int64)


def _repeated_claims(typed: pl.LazyFrame, hashes: pl.Series, count: int) -> tuple[pl.Expr, pl.DataFrame]:
    """Whether a row is one of those whose claim id may be read more than once (its hash is
    among ``hashes``), and those rows, few, each with its ``PART_COLUMN``: the partition of its
    claim id's first row's provider. The rows are told by their place in the files: every
    partition's filter then reads a row number, not every claim id again to hash it."""
    if hashes.is_empty():
        return pl.lit(False), pl.DataFrame(schema={PART_COLUMN: pl.UInt64})
    claim = pl.col("claim_id")
    rows = typed.filter(claim.is_not_null() & hash_among(claim, hashes)).collect(engine="streaming")
    rows = rows.sort(FILE_COLUMN, "_row")
    place = _place_in_files(pl.col(FILE_COLUMN), pl.col("_row"))
    shared = place.is_in(rows.select(place).to_series().implode())
    return shared, rows.with_columns(partition_of(pl.col("provider_nihdi").first().over("claim_id"), count))


def _rows_of(part: int, count: int, typed: pl.LazyFrame, shared: pl.Expr, repeated: pl.DataFrame) -> pl.LazyFrame:
    """The rows of partition ``part``: its providers' own, and its repeated claim ids'. The
    filter reads the columns as stored, so the scan applies it before decoding the rest."""
    rows = typed.filter(~shared & (partition_of(pl.col("provider_nihdi"), count) == part))
    if repeated.is_empty():
        return rows
    return pl.concat([rows, repeated.lazy().filter(pl.col(PART_COLUMN) == part).drop(PART_COLUMN)])


@dataclass(frozen=True)
class LinePartitions:
    """The typed billing lines of a dataset, by partition: each a plan that reads its rows."""

    files: list[SourceFile]
    parts: list[pl.LazyFrame]
    # The lines' contract, its duplicate check told which claim ids' hashes repeat.
    spec: TableSpec = LINES

    @classmethod
    def split(cls, root: Path, count: int, folder: Path) -> LinePartitions:
        """The billing lines at ``root`` in ``count`` partitions by a hash of their provider
        (for a repeated claim id, of its first row's provider): Parquet files (CSV files once
        typed, under ``folder``) read again for each of up to ``REREAD_PARTITIONS``, else read
        once and written under ``folder``."""
        files = files_of(root, LINES)
        try:
            typed = typed_lines(files)
            if any(f.is_csv for f in files):
                # Text is parsed once: the passes below read the typed lines from Parquet.
                with writing(folder, WRITTEN):
                    typed.sink_parquet(folder / TYPED_FILE, mkdir=True, **SPILL_OPTIONS)
                typed = pl.scan_parquet(folder / TYPED_FILE)
            hashes = repeated_hashes(typed, pl.col("claim_id"))
            spec = replace(LINES, schema=billing_lines_repeating_only(hashes))
            shared, repeated = _repeated_claims(typed, hashes, count)
            if count <= REREAD_PARTITIONS:
                parts = [_rows_of(i, count, typed, shared, repeated) for i in range(count)]
                return cls(files=files, parts=parts, spec=spec)
            # Streamed: a join here would hold every line in memory, whatever the engine.
            own = typed.filter(~shared).with_columns(partition_of(pl.col("provider_nihdi"), count))
            with writing(folder, WRITTEN):
                own.sink_parquet(
                    pl.PartitionBy(folder, key=PART_COLUMN, include_key=False), mkdir=True, **SPILL_OPTIONS
                )
        except pl.exceptions.PolarsError as exc:  # found while reading the rows, past the header
            raise unreadable_table(LINES.name, files, exc) from None
        (folder / TYPED_FILE).unlink(missing_ok=True)
        with writing(folder, WRITTEN):
            for (index,), rows in repeated.partition_by(PART_COLUMN, as_dict=True, include_key=False).items():
                (folder / f"{PART_COLUMN}={index}").mkdir(parents=True, exist_ok=True)
                rows.write_parquet(folder / f"{PART_COLUMN}={index}" / "repeated-claim-ids.parquet", **SPILL_OPTIONS)
        written = sorted(folder.glob(f"{PART_COLUMN}=*"), key=lambda p: int(p.name.partition("=")[2]))
        return cls(files=files, parts=[pl.scan_parquet(p) for p in written], spec=spec)

    def load(self, part: pl.LazyFrame, valid_tables: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """One partition's lines, validated (:func:`validate_partition`)."""
        try:
            return validate_partition(part, valid_tables, self.spec)
        except pl.exceptions.PolarsError as exc:  # a file read again, found unreadable past its header
            raise unreadable_table(LINES.name, self.files, exc) from None


def validate_partition(
    rows: pl.LazyFrame, valid_tables: dict[str, pl.DataFrame], spec: TableSpec = LINES
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A partition's valid lines, and its failed rows' keys and reasons (``_source``, ``_row``,
    ``_reasons``) for :func:`quarantined_lines`. The valid lines end with each one's row among
    ``valid_tables``' invoices (``INVOICE_ROW``), which the enrichment reads instead of
    looking the invoice ids up again.

    ``rows`` are typed, with ``FILE_COLUMN``. Only the order of the rows of one claim id
    matters (the first read is kept), and every row of a claim id read more than once comes
    with the partition's rows of repeated claim ids, in reading order: the partition is not
    sorted. ``spec``: the lines' contract, or the one :meth:`LinePartitions.split` gives, whose
    duplicate check knows which claim ids may repeat.
    """
    # Streamed: a partition read from files it shares with others holds only its own rows. The
    # stream's many chunks are joined in one: every step after validation runs faster on it.
    typed = rows.collect(engine="streaming").rechunk().drop(FILE_COLUMN)
    return validate(spec, typed.lazy(), valid_tables, with_invoice_rows=True)


def in_reading_order(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` sorted by ``FILE_COLUMN`` and ``_row``, unless they are already: the pieces of
    a partition gathered by a Spark task arrive in any order. Checking the order takes
    milliseconds where sorting a partition of millions of lines takes most of a second.
    """
    file, row = pl.col(FILE_COLUMN), pl.col("_row")
    ascending = (file > file.shift(1)) | ((file == file.shift(1)) & (row > row.shift(1)))
    if rows.select(ascending.fill_null(True).all()).item():
        return rows
    return rows.sort(FILE_COLUMN, "_row")


def quarantined_lines(files: list[SourceFile], failed: list[pl.DataFrame]) -> pl.DataFrame:
    """The quarantined lines of every partition (``failed``, at least one), their raw values
    read from ``files`` in one pass."""
    return quarantine_frame(LINES.name, pl.concat(failed), lambda keys: raw_values_of(files, keys))

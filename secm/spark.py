"""The partitions of a run evaluated on Apache Spark: the same work, spread over a cluster.

A run's partitions by provider (``data_contracts.partitions``) are independent: each is
validated, evaluated by the rule catalog and reduced to profile parts on its own, and only
then combined. On one machine they are evaluated one after the other; here Spark does it:

1. tasks read the claim ids of the source files (a Parquet file in slices of rows, a CSV file
   whole) and Spark gathers them by claim id, to find the ids read more than once and the
   partition of the provider of each one's first row (the only check that crosses providers);
2. tasks read the source files, typed as the loader types them, and give each row the
   partition of its provider, or of its repeated claim id's first row;
3. Spark shuffles them by partition, and each task validates and evaluates its partitions
   with the Polars engine, the reference tables travelling with the task;
4. the driver collects what each partition contributes (flags, failed rows' keys, profile
   parts: rows per provider, not per line) and the run goes on as any run.

Rows travel between tasks as Arrow IPC files, one per slice read and partition: Spark
schedules the tasks and moves the files without converting each row to its own format, which
cost more than all the rules (``bench/bench_spark.py``), and Polars types (times, unsigned
integers) arrive as they left. The outputs are therefore those of a run on one machine,
whatever the cluster: the catalog is not compiled anew for Spark, so a rule declared in it
works here without code.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa  # type: ignore[import-untyped]

from data_contracts.loader import Dataset, TableStats, files_of, unreadable_table
from data_contracts.partitions import (
    FILE_COLUMN,
    LINES,
    PART_COLUMN,
    in_reading_order,
    partition_of,
    partitions_for,
    typed_lines,
    validate_partition,
)
from data_contracts.reader import SourceFile, unreadable
from secm.pipeline import VALIDATING, Stopwatch, lines_outcome

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

    from secm.pipeline import _Part

ROWS_PER_READ = 1_000_000  # rows of a Parquet file one reading task reads
_UNREADABLE = "secm: unreadable billing-lines file #"  # how a task says so to the driver
PIECES = "part long, piece binary"  # what reading tasks give: rows for one partition, as Arrow IPC
FIRST = "_first"  # a repeated claim id's partition: its first row's provider's


@contextmanager
def _arrow_only() -> Iterator[None]:
    """Without PySpark's warning that pandas 3 is not fully supported, which it gives when a
    session starts and whenever an Arrow function is declared: these exchange Arrow only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
        yield


def spark_session(master: str | None = None) -> SparkSession:
    """The running Spark session, or a new one on ``master``, its Python workers running this
    interpreter. Without ``master``, the one ``spark-submit --master`` gave, else ``local[*]``
    (``spark-submit``'s own default, which also starts the JVM of a plain ``python``)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    with _arrow_only():
        session = (
            builder.appName("secm run")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    return session


def default_partitions(data: Path, master: str | None = None) -> int:
    """One partition per ``LINES_PER_PARTITION`` lines, and at least one per core of the cluster."""
    return max(partitions_for(data), spark_session(master).sparkContext.defaultParallelism)


def _piece(part: int, rows: pl.DataFrame) -> pa.RecordBatch:
    """``rows`` as one value for Spark to move: an Arrow IPC file, beside its ``part``."""
    sink = io.BytesIO()
    rows.write_ipc(sink, compression="lz4")
    return pa.RecordBatch.from_pydict({"part": [part], "piece": [sink.getvalue()]})


def _rows(pieces: Iterator[pa.RecordBatch]) -> pl.DataFrame | None:
    """The rows of every piece a task is given, or None when it is given none."""
    frames = [pl.read_ipc(io.BytesIO(piece)) for batch in pieces for piece in batch.column("piece").to_pylist()]
    return pl.concat(frames) if frames else None


def _slices(files: list[SourceFile]) -> list[tuple[int, int, int | None]]:
    """What each reading task reads: (file number, first row, rows), a Parquet file in slices
    of ``ROWS_PER_READ`` (its rows are counted from its metadata), a CSV file whole."""
    slices: list[tuple[int, int, int | None]] = []
    for number, file in enumerate(files):
        if file.is_csv:
            slices.append((number, 0, None))
            continue
        rows = pl.scan_parquet(file.path).select(pl.len()).collect().item()
        slices += [(number, start, ROWS_PER_READ) for start in range(0, max(rows, 1), ROWS_PER_READ)]
    return slices


def _read(
    files: list[SourceFile], count: int, columns: list[str], by: pl.Expr, first: Broadcast[pl.DataFrame] | None = None
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A task reading the slices it is given (see :func:`_slices`): ``columns`` of each row,
    typed, with its file's number and partition (its provider's, or its claim id's in
    ``first``, a broadcast frame of repeated claim ids), in one piece per value of ``by``."""

    def read(slices: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        repeated = None if first is None else first.value.lazy()
        for batch in slices:
            for number, start, length in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                rows = (
                    typed_lines([files[number]])
                    .slice(start, length)
                    .with_columns(
                        pl.lit(number, pl.UInt32).alias(FILE_COLUMN), partition_of(pl.col("provider_nihdi"), count)
                    )
                )
                if repeated is not None:
                    rows = rows.join(repeated, on="claim_id", how="left").with_columns(
                        pl.coalesce(FIRST, PART_COLUMN).alias(PART_COLUMN)
                    )
                try:
                    found = rows.select(*columns).with_columns(by.alias("_by")).collect()
                except pl.exceptions.PolarsError as exc:  # said without the rows' values
                    raise RuntimeError(f"{_UNREADABLE}{number}: {unreadable(exc)}") from None
                for (part,), piece in found.partition_by("_by", as_dict=True, include_key=False).items():
                    yield _piece(part, piece)

    return read


def _first_partitions(pieces: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A task given every row of some claim ids (their keys: file, row, partition): the ids
    read more than once, each with its first row's partition (``FIRST``), in reading order."""
    rows = _rows(pieces)
    if rows is None:
        return
    claim = pl.col("claim_id")
    repeated = rows.filter(claim.is_not_null() & claim.is_duplicated()).sort(FILE_COLUMN, "_row")
    first = repeated.group_by("claim_id").agg(pl.col(PART_COLUMN).first().cast(pl.Int64).alias(FIRST))
    yield from (
        first.to_arrow(compat_level=pl.CompatLevel.oldest())
        .cast(pa.schema([("claim_id", pa.string()), (FIRST, pa.int64())]))
        .to_batches()
    )


def _evaluate(
    tables: dict[str, pl.DataFrame], evaluate_part: Callable[..., _Part]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A task evaluating the partitions whose pieces it is given, one at a time: for each, its
    number and what it contributes, pickled (its part, failed rows, rows read, timings)."""

    def evaluate(pieces: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = _rows(pieces)
        if rows is None:
            return
        lazy = {name: frame.lazy() for name, frame in tables.items()}
        for (number,), part in rows.partition_by(PART_COLUMN, as_dict=True, include_key=False).items():
            clock = Stopwatch()
            with clock(VALIDATING):
                lines, failures = validate_partition(in_reading_order(part).lazy(), tables)
            found = evaluate_part({**lazy, "billing_lines": lines.lazy()}, clock=clock)
            profiles = found.profiles
            found = replace(found, profiles=replace(profiles, fees=profiles.fees.collect().lazy()))  # with its rows
            contributed = (found, failures, lines.height + failures.height, clock.seconds)
            payload = pickle.dumps(contributed, protocol=pickle.HIGHEST_PROTOCOL)
            yield pa.RecordBatch.from_pydict({"part": [number], "payload": [payload]})

    return evaluate


def evaluate_partitions(
    data: Path,
    dataset: Dataset,
    count: int,
    folder: Path,
    evaluate_part: Callable[..., _Part],
    clock: Stopwatch,
    step: Callable[[str], None],
    master: str | None = None,
) -> tuple[list[_Part], pl.DataFrame, TableStats]:
    """The billing lines at ``data`` in ``count`` partitions by provider, each validated and
    evaluated by ``evaluate_part`` (called with the tables and a ``clock``) in a Spark task;
    with the lines' quarantine and counts. What each partition contributes is collected to
    this process, its largest frame spilled under ``folder`` (as a run on one machine does);
    the tasks' timings are added to ``clock``."""
    before = clock.seconds.get(VALIDATING, 0.0)
    step("Starting Spark")
    spark = spark_session(master)
    files = files_of(data, LINES)
    slices = _slices(files)
    reads = spark.createDataFrame(slices, "file long, start long, length long").repartition(len(slices))
    step(f"Finding repeated claim ids on Spark ({spark.sparkContext.master}) in {len(files)} file(s) of billing lines")
    with _arrow_only():
        keys = ["claim_id", "_row", FILE_COLUMN, PART_COLUMN]
        gathered = reads.mapInArrow(_read(files, count, keys, pl.col("claim_id").hash() % count), PIECES)
        firsts = gathered.repartition(count, "part").mapInArrow(_first_partitions, f"claim_id string, {FIRST} long")
        first = pl.DataFrame(_collected(firsts, files), schema={"claim_id": pl.String, FIRST: pl.UInt64}, orient="row")
    step(f"Evaluating {count} partitions on Spark ({first.height:,} repeated claim ids)")
    with _arrow_only():
        columns = [*typed_lines(files).collect_schema(), PART_COLUMN]
        shared = spark.sparkContext.broadcast(first) if first.height else None
        placed = reads.mapInArrow(_read(files, count, columns, pl.col(PART_COLUMN), shared), PIECES)
        evaluate = _evaluate(dataset.tables, evaluate_part)
        evaluated = placed.repartition(count, "part").mapInArrow(evaluate, "part long, payload binary")
        collected = sorted(_collected(evaluated, files), key=lambda row: row["part"])
    parts: list[_Part] = []
    failed: list[pl.DataFrame] = []
    rows_read = 0
    for row in collected:
        part, failures, read, seconds = pickle.loads(row["payload"])
        parts.append(replace(part, profiles=part.profiles.spilled(folder / f"fees-{row['part']}.parquet")))
        failed.append(failures)
        rows_read += read
        for stage, spent in seconds.items():
            clock.seconds[stage] = clock.seconds.get(stage, 0.0) + spent
    quarantine, stats = lines_outcome(dataset, files, failed, rows_read, clock, before)
    return parts, quarantine, stats


def _collected(frame: DataFrame, files: list[SourceFile]) -> list[Any]:
    """The rows of ``frame``; a file unreadable past its header, which failed a task, as the
    loader's one-line error."""
    try:
        return frame.collect()
    except Exception as exc:
        found = re.search(rf"{_UNREADABLE}(\d+): (.*)", str(exc))
        if found is None:
            raise
        raise unreadable_table(LINES.name, [files[int(found[1])]], found[2]) from None

"""The partitions of a run evaluated on Apache Spark: the same work, spread over a cluster.

A run's partitions by provider (``data_contracts.partitions``) are independent: each is
validated, evaluated by the rule catalog and reduced to profile parts on its own, and only
then combined. On one machine they are evaluated one after the other; here Spark does it:

1. tasks read the source files (a Parquet file in slices of rows, a CSV file whole), typed as
   the loader types them, and give each row the partition of its provider;
2. the rows of a claim id read more than once go to the partition of its first row's
   provider, found by Spark over every file (the only check that crosses providers);
3. the rows are shuffled by partition, and each task validates and evaluates its partitions
   with the Polars engine (``mapInArrow``), the reference tables travelling with the task;
4. the driver collects what each partition contributes (flags, failed rows' keys, profile
   parts: rows per provider, not per line) and the run goes on as any run.

The outputs are therefore those of a run on one machine, whatever the cluster: the catalog
is not compiled anew for Spark, so a rule declared in it works here without code.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import polars as pl
import pyarrow as pa  # type: ignore[import-untyped]

from data_contracts.loader import Dataset, TableStats, files_of, unreadable_table
from data_contracts.partitions import (
    FILE_COLUMN,
    LINES,
    PART_COLUMN,
    partition_of,
    partitions_for,
    typed_lines,
    validate_partition,
)
from data_contracts.reader import SourceFile, unreadable
from secm.pipeline import VALIDATING, Stopwatch, lines_outcome

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from secm.pipeline import _Part

ROWS_PER_READ = 1_000_000  # rows of a Parquet file one reading task reads
_UNREADABLE = "secm: unreadable billing-lines file #"  # how a task says so to the driver
# Polars types Spark's Arrow exchange does not carry, and what they travel as.
_CARRIED_AS: dict[type[pl.DataType], pl.DataType] = {pl.Time: pl.Int64(), pl.UInt32: pl.Int64(), pl.UInt64: pl.Int64()}


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


def _carried(schema: pl.Schema) -> list[pl.Expr]:
    return [pl.col(name).cast(_CARRIED_AS[type(dtype)]) for name, dtype in schema.items() if type(dtype) in _CARRIED_AS]


def _spark_schema(schema: pl.Schema) -> Any:
    """The Spark schema of frames of ``schema`` once ``_carried``."""
    from pyspark.sql import types as T

    simple = {
        pl.String: T.StringType(),
        pl.Int64: T.LongType(),
        pl.Float64: T.DoubleType(),
        pl.Boolean: T.BooleanType(),
        pl.Date: T.DateType(),
        pl.Datetime: T.TimestampNTZType(),
    }

    def spark_type(dtype: pl.DataType) -> Any:
        dtype = _CARRIED_AS.get(type(dtype), dtype)
        if isinstance(dtype, pl.List):
            inner = dtype.inner
            return T.ArrayType(spark_type(inner if isinstance(inner, pl.DataType) else inner()))
        return simple[type(dtype)]

    return T.StructType([T.StructField(name, spark_type(dtype)) for name, dtype in schema.items()])


def _small(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with 32-bit offsets, the only ones Spark's Arrow exchange reads."""
    if pa.types.is_large_string(dtype):
        return pa.string()
    if pa.types.is_large_list(dtype) or pa.types.is_list(dtype):
        return pa.list_(_small(dtype.value_type))
    return dtype


def _batches(frame: pl.DataFrame) -> Iterator[pa.RecordBatch]:
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    yield from table.cast(pa.schema([field.with_type(_small(field.type)) for field in table.schema])).to_batches()


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


def _read(files: list[SourceFile], count: int, schema: pl.Schema) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """A task reading the slices it is given (see :func:`_slices`), each row with its partition;
    only the columns of ``schema`` (a Parquet file's others are not read)."""

    def read(slices: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in slices:
            for number, start, length in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                typed = typed_lines([files[number]]).slice(start, length)
                located = typed.with_columns(
                    pl.lit(number, pl.UInt32).alias(FILE_COLUMN), partition_of(pl.col("provider_nihdi"), count)
                )
                try:
                    rows = located.select(*schema).collect()
                except pl.exceptions.PolarsError as exc:  # said without the rows' values
                    raise RuntimeError(f"{_UNREADABLE}{number}: {unreadable(exc)}") from None
                yield from _batches(rows.with_columns(_carried(schema)))

    return read


def _with_first_partitions(lines: DataFrame, keys: DataFrame) -> DataFrame:
    """``lines`` with the rows of a claim id read more than once in the partition of its
    first row (in reading order), as ``LinePartitions.split`` places them. The claim ids are
    found on ``keys`` (the same rows, four columns read), and the few repeated ones sent to
    every task: neither the lines nor their reading go through that search."""
    from pyspark.sql import functions as F

    first = (
        keys.where(F.col("claim_id").isNotNull())
        .groupBy("claim_id")
        .agg(F.count("*").alias("_copies"), F.min_by(PART_COLUMN, F.struct(FILE_COLUMN, "_row")).alias("_first"))
        .where("_copies > 1")
        .select("claim_id", "_first")
    )
    placed = lines.join(F.broadcast(first), on="claim_id", how="left")
    return placed.withColumn(PART_COLUMN, F.coalesce("_first", PART_COLUMN)).drop("_first")


def _evaluate(
    schema: pl.Schema,
    tables: dict[str, pl.DataFrame],
    evaluate_part: Callable[..., _Part],
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A task evaluating the partitions whose rows it is given, one at a time: for each, its
    number and what it contributes, pickled (its part, failed rows, rows read, timings)."""

    def evaluate(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        frames = [cast(pl.DataFrame, pl.from_arrow(batch)) for batch in batches]
        if not frames:
            return
        rows = pl.concat(frames).cast(dict(schema))  # type: ignore[arg-type]
        lazy = {name: frame.lazy() for name, frame in tables.items()}
        for (number,), part in rows.partition_by(PART_COLUMN, as_dict=True, include_key=False).items():
            clock = Stopwatch()
            with clock(VALIDATING):
                lines, failures = validate_partition(part.lazy(), tables)
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
    schema = pl.Schema({**typed_lines(files).collect_schema(), FILE_COLUMN: pl.UInt32(), PART_COLUMN: pl.UInt64()})
    slices = _slices(files)
    step(f"Reading {len(files)} file(s) of billing lines on Spark ({spark.sparkContext.master}), {count} partitions")
    reads = spark.createDataFrame(slices, "file long, start long, length long").repartition(len(slices))
    with _arrow_only():
        lines = reads.mapInArrow(_read(files, count, schema), _spark_schema(schema))
        keys = pl.Schema({name: schema[name] for name in ("claim_id", "_row", FILE_COLUMN, PART_COLUMN)})
        claims = reads.mapInArrow(_read(files, count, keys), _spark_schema(keys))
        placed = _with_first_partitions(lines, claims).repartition(count, PART_COLUMN)
        evaluated = placed.mapInArrow(_evaluate(schema, dataset.tables, evaluate_part), "part long, payload binary")
    step(f"Evaluating {count} partitions on Spark")
    try:
        collected = sorted(evaluated.collect(), key=lambda row: row["part"])
    except Exception as exc:  # a file unreadable past its header failed its task: say which, in one line
        found = re.search(rf"{_UNREADABLE}(\d+): (.*)", str(exc))
        if found is None:
            raise
        raise unreadable_table(LINES.name, [files[int(found[1])]], found[2]) from None
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

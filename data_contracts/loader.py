"""Load a dataset folder: read, type, validate, quarantine. Nothing is lost.

Every input row ends in exactly one place: the valid frame of its table, or the quarantine
frame with one or more reason codes and its raw values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import polars as pl

from data_contracts.coerce import coerce, coerce_files
from data_contracts.errors import DatasetNotFoundError, MissingTableError, UnreadableTableError
from data_contracts.parsers import looks_like_national_number
from data_contracts.reader import FILE_COLUMN, SourceFile, find_table_files, scan_raw, unreadable
from data_contracts.references import failed_checks, invoice_rows, reasons
from data_contracts.schemas import PROVENANCE_COLUMNS
from data_contracts.tables import TABLES, TableSpec

log = logging.getLogger(__name__)

QUARANTINE_SCHEMA = {
    "table": pl.String,
    "source": pl.String,
    "row_number": pl.Int64,
    "reasons": pl.List(pl.String),
    "raw_values": pl.String,
}
DEFAULT_NOMENCLATURE = "<default nomenclature>"
RAW_VALUE_CHARS = 200  # of each raw value kept in the quarantine: enough to see what was wrong
WITHHELD = "(withheld: a national register number)"
# The stored values (``_source``, ``_row``, ``raw_values``) of the rows keyed by ``_source`` and ``_row``.
RawValues = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class TableStats:
    rows_read: int
    rows_valid: int
    rows_quarantined: int
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Dataset:
    """Valid rows per table (contract columns, typed), the quarantine, and the counts."""

    root: Path
    tables: dict[str, pl.DataFrame]
    quarantine: pl.DataFrame
    stats: dict[str, TableStats] = field(default_factory=dict)

    def lazy_tables(self) -> dict[str, pl.LazyFrame]:
        """Every table's valid rows as a LazyFrame, the form the rule engine takes."""
        return {name: frame.lazy() for name, frame in self.tables.items()}


def default_nomenclature_file() -> SourceFile:
    path = Path(str(resources.files("data_contracts") / "nomenclature.csv"))
    return SourceFile(path, DEFAULT_NOMENCLATURE)


def _reason_codes(rule_columns: list[str]) -> pl.Expr:
    """Reason codes of a row from dataframely's per-rule verdicts."""
    codes: list[pl.Expr] = []
    for rule in rule_columns:
        if rule == "well_formed":
            continue
        column, _, check = rule.partition("|")
        code = rule if not check else (f"missing_{column}" if check == "nullability" else f"invalid_{column}")
        codes.append(pl.when(pl.col(rule) == "invalid").then(pl.lit(code)))
    malformed = pl.col("_malformed").list.eval(pl.lit("malformed_") + pl.element())
    # A value that did not parse is null too; 'malformed' says more than 'missing'.
    shadowed = pl.col("_malformed").list.eval(pl.lit("missing_") + pl.element())
    listed = pl.concat_list([malformed, *codes]).list.drop_nulls()
    return listed.list.set_difference(shadowed).alias("_reasons")


def _stored(column: str, dtype: pl.DataType) -> pl.Expr:
    """A raw value as the quarantine keeps it: capped, and never a patient's national register
    number (the row is quarantined for carrying one; keeping it would defeat the guard)."""
    if dtype.is_nested():
        return pl.col(column)
    value = pl.col(column).cast(pl.String)
    if column == "patient_id":
        value = pl.when(looks_like_national_number(value.str.strip_chars())).then(pl.lit(WITHHELD)).otherwise(value)
    return value.str.slice(0, RAW_VALUE_CHARS).alias(column)


def _stored_values(raw: pl.LazyFrame) -> pl.LazyFrame:
    """``_source``, ``_row`` and the row's stored values as one JSON object, each capped."""
    schema = raw.collect_schema()
    values = pl.struct(_stored(c, schema[c]) for c in schema if c not in ("_source", "_row"))
    return raw.select("_source", "_row", values.struct.json_encode().alias("raw_values"))


def raw_values_of(files: list[SourceFile], keys: pl.DataFrame) -> pl.DataFrame:
    """The stored values of the quarantined rows, as one JSON object per row."""
    parts = []
    for source in files:
        rows = keys.filter(pl.col("_source") == source.name).select("_row")
        if not rows.is_empty():
            parts.append(_stored_values(scan_raw(source).join(rows.lazy(), on="_row", how="semi")))
    if not parts:
        return pl.DataFrame(schema={"_source": pl.String, "_row": pl.Int64, "raw_values": pl.String})
    return pl.concat(pl.collect_all(parts))


def quarantine_frame(table: str, failed: pl.DataFrame, raw_values: RawValues) -> pl.DataFrame:
    keys = failed.select("_source", "_row", "_reasons")
    raw = raw_values(keys)
    return keys.join(raw, on=["_source", "_row"], how="left").select(
        pl.lit(table).alias("table"),
        pl.col("_source").alias("source"),
        pl.col("_row").alias("row_number"),
        pl.col("_reasons").alias("reasons"),
        pl.col("raw_values"),
    )


def _finish(valid: pl.LazyFrame, spec: TableSpec) -> pl.LazyFrame:
    fills = [pl.col(c).fill_null(v) for c, v in spec.defaults.items()]
    return valid.drop(*PROVENANCE_COLUMNS, strict=False).with_columns(fills)


def files_of(root: Path, spec: TableSpec) -> list[SourceFile]:
    files = find_table_files(root, spec.name)
    if files or spec.required:
        if not files:
            msg = f"Dataset {root} has no table '{spec.name}' (expected {spec.name}.parquet, {spec.name}.csv or a {spec.name}/ folder)"
            raise MissingTableError(msg)
        return files
    return [default_nomenclature_file()] if spec.name == "nomenclature" else []


def load_table(
    root: Path, spec: TableSpec, valid_tables: dict[str, pl.DataFrame]
) -> tuple[pl.DataFrame, pl.DataFrame, TableStats]:
    """Valid rows, quarantined rows and counts of one table of the dataset at ``root``."""
    return load_files(spec, files_of(root, spec), valid_tables)


def default_nomenclature() -> pl.DataFrame:
    """The shipped reference nomenclature, validated like any table."""
    return load_files(TABLES["nomenclature"], [default_nomenclature_file()], {})[0]


def load_files(
    spec: TableSpec, files: list[SourceFile], valid_tables: dict[str, pl.DataFrame]
) -> tuple[pl.DataFrame, pl.DataFrame, TableStats]:
    """Valid rows, quarantined rows and counts of one table read from ``files``."""
    started = time.perf_counter()
    if not files:
        return spec.empty(), pl.DataFrame(schema=QUARANTINE_SCHEMA), TableStats(0, 0, 0, 0.0)
    try:
        typed = coerce_files(files, spec).drop(FILE_COLUMN)
        return _load(spec, typed, valid_tables, started, lambda keys: raw_values_of(files, keys))
    except pl.exceptions.PolarsError as exc:  # found while reading the rows, past the header
        raise unreadable_table(spec.name, files, exc) from None


def unreadable_table(table: str, files: list[SourceFile], exc: pl.exceptions.PolarsError | str) -> UnreadableTableError:
    """The one-line error for a table whose rows cannot be read past the header (``exc``, or
    what :func:`unreadable` said of it elsewhere)."""
    names = ", ".join(f.name for f in files)
    return UnreadableTableError(
        f"Cannot read table '{table}' ({names}): {exc if isinstance(exc, str) else unreadable(exc)}"
    )


def load_records(
    spec: TableSpec, records: pl.DataFrame, valid_tables: dict[str, pl.DataFrame], source: str = "request"
) -> tuple[pl.DataFrame, pl.DataFrame, TableStats]:
    """:func:`load_files` for records already in memory (posted to the service): ``records``
    has the contract's columns, every value written as text, as in a CSV file."""
    started = time.perf_counter()
    raw = records.with_row_index("_row", offset=1).with_columns(
        pl.col("_row").cast(pl.Int64), pl.lit(source).alias("_source")
    )
    typed = coerce(raw.lazy(), spec, source, text=True, decimal_comma=False)
    return _load(
        spec,
        typed,
        valid_tables,
        started,
        lambda keys: _stored_values(raw.lazy().join(keys.lazy().select("_row"), on="_row", how="semi")).collect(),
    )


def validate(
    spec: TableSpec, typed: pl.LazyFrame, valid_tables: dict[str, pl.DataFrame], *, with_invoice_rows: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Valid rows of ``typed`` (contract columns), and the failed rows' ``_source``, ``_row``
    and ``_reasons``. Billing lines ``with_invoice_rows`` keep, as a last column, their row
    among ``valid_tables``' invoices that the reference checks found (``INVOICE_ROW``)."""
    valid, failure = spec.schema.filter(typed).collect_all()
    # In one chunk: read in several (row groups, partitions), the failed rows' values come in
    # chunks unlike their verdicts', and Polars 2.1 panics comparing such lists (set_difference).
    failed = failure.details().rechunk()
    rule_columns = [c for c in failed.columns if c not in valid.columns]
    failed = failed.select("_source", "_row", _reason_codes(rule_columns))
    kept = valid.lazy()
    if spec.name == "billing_lines":
        invoices = valid_tables["third_party_invoices"]
        rows = invoice_rows(valid["invoice_id"], invoices)
        checks = failed_checks(
            valid,
            providers=valid_tables["providers"],
            invoices=invoices,
            nomenclature=valid_tables["nomenclature"],
            rows=rows,
        )
        if with_invoice_rows:
            kept = kept.with_columns(rows)
        fails = checks.lazy().select(pl.any_horizontal(pl.all())).collect().to_series()
        if fails.any():
            unreferenced = pl.concat([valid.lazy().select("_source", "_row"), checks.lazy()], how="horizontal")
            unreferenced = unreferenced.filter(fails).select("_source", "_row", reasons().alias("_reasons"))
            failed = pl.concat([failed, unreferenced.collect()])
            kept = kept.filter(~fails)
    # Lazily: Polars' eager operations on ten million rows of many chunks copy the frame.
    return _finish(kept, spec).collect(), failed


def _load(
    spec: TableSpec,
    typed: pl.LazyFrame,
    valid_tables: dict[str, pl.DataFrame],
    started: float,
    raw_values: RawValues,
) -> tuple[pl.DataFrame, pl.DataFrame, TableStats]:
    valid, failed = validate(spec, typed, valid_tables)
    quarantine = quarantine_frame(spec.name, failed, raw_values)
    stats = TableStats(len(valid) + len(failed), len(valid), len(quarantine), time.perf_counter() - started)
    return valid, quarantine, stats


def dataset_folder(root: Path | str) -> Path:
    """``root`` as a path; ``DatasetNotFoundError`` when there is no such folder."""
    root = Path(root)
    if not root.is_dir():
        msg = f"Dataset folder {root} does not exist"
        raise DatasetNotFoundError(msg)
    return root


def found_dataset(root: Path | str) -> Path:
    """``root`` as a path, once it is a folder holding every required table; else the
    one-line error :func:`load_dataset` would raise. A run checks this before it opens
    anything, so that a mistyped folder leaves nothing behind (a new database, say)."""
    root = dataset_folder(root)
    for spec in TABLES.values():
        files_of(root, spec)
    return root


def load_dataset(
    root: Path | str, *, on_table: Callable[[str, TableStats], None] | None = None, without_lines: bool = False
) -> Dataset:
    """Read and validate every table of the dataset folder ``root``; ``without_lines``, every
    table but the billing lines, left empty (for a run that reads them in partitions).

    Raises ``ContractError`` (one line) for a missing folder, table or column; a bad
    row never raises, it is quarantined.
    """
    root = dataset_folder(root)
    tables: dict[str, pl.DataFrame] = {}
    quarantines: list[pl.DataFrame] = []
    stats: dict[str, TableStats] = {}
    for name, spec in TABLES.items():
        if without_lines and name == "billing_lines":
            tables[name] = spec.empty()
            continue
        tables[name], quarantine, stats[name] = load_table(root, spec, tables)
        quarantines.append(quarantine)
        log.info(
            "%s: %d read, %d valid, %d quarantined (%.1fs)",
            name,
            stats[name].rows_read,
            stats[name].rows_valid,
            stats[name].rows_quarantined,
            stats[name].seconds,
        )
        if on_table is not None:
            on_table(name, stats[name])
    quarantine = pl.concat(quarantines).sort("table", "source", "row_number")
    return Dataset(root=root, tables=tables, quarantine=quarantine, stats=stats)

"""Finding a table's files in a dataset folder and reading them as they are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data_contracts.errors import UnreadableTableError

SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class SourceFile:
    """One file of a table; ``name`` is its path relative to the dataset folder."""

    path: Path
    name: str

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"


def find_table_files(root: Path, table: str) -> list[SourceFile]:
    """``NAME.parquet``/``NAME.csv``, or every part under a ``NAME/`` folder (sorted)."""
    paths: list[Path] = [root / f"{table}{suffix}" for suffix in SUFFIXES]
    found = [p for p in paths if p.is_file()]
    folder = root / table
    if folder.is_dir():
        found += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    return [SourceFile(p, p.relative_to(root).as_posix()) for p in found]


def csv_separator(path: Path) -> str:
    """``;`` or ``,``, whichever the header row uses more."""
    with path.open("rb") as handle:
        head = handle.readline(1 << 16).decode("utf-8-sig", errors="replace")
    return ";" if head.count(";") > head.count(",") else ","


# A CSV row's fields beyond its header's, kept in this column (its first one) so that the row
# can be quarantined rather than the file refused.
BEYOND_HEADER = "_beyond_header"


def _scan_csv(path: Path) -> pl.LazyFrame:
    """Every field as text; rows with fewer fields than the header get nulls, rows with more
    keep the first extra one in ``BEYOND_HEADER``. Bytes that are not UTF-8 become U+FFFD."""
    separator = csv_separator(path)
    options = {"separator": separator, "infer_schema": False, "encoding": "utf8-lossy"}
    header = pl.read_csv(path, n_rows=0, **options).columns  # type: ignore[arg-type]
    return pl.scan_csv(
        path,
        has_header=False,
        skip_rows=1,
        schema=dict.fromkeys([*header, BEYOND_HEADER], pl.String),
        truncate_ragged_lines=True,
        missing_columns="insert",
        row_index_name="_row",
        row_index_offset=1,
        **options,  # type: ignore[arg-type]
    )


def scan_raw(source: SourceFile) -> pl.LazyFrame:
    """The file's rows as stored (CSV: all text), with ``_source`` and 1-based ``_row``."""
    try:
        # The scan numbers the rows itself: a filter on the values is then evaluated while
        # reading, before the rest of a row is decoded.
        if source.is_csv:
            lf = _scan_csv(source.path)
        else:
            lf = pl.scan_parquet(source.path, row_index_name="_row", row_index_offset=1)
        names = lf.collect_schema().names()
    except pl.exceptions.NoDataError:
        raise UnreadableTableError(f"Cannot read {source.name}: the file is empty, without even a header") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UnreadableTableError(f"Cannot read {source.name}: {unreadable(exc)}") from None
    renames = {n: n.strip().lstrip("\ufeff") for n in names if n != n.strip().lstrip("\ufeff")}
    return lf.rename(renames).with_columns(pl.col("_row").cast(pl.Int64), pl.lit(source.name).alias("_source"))


def unreadable(exc: Exception) -> str:
    """Why a file could not be read, in one line and without any of its values: the readers'
    own messages quote the offending field, which may be a patient's."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc)
    if "not properly escaped" in text or "invalid csv" in text.lower():
        return "not valid CSV (a quoted field is never closed?)"
    if "parquet" in text.lower() or "out of spec" in text.lower():
        return "not a valid Parquet file"
    return f"unreadable ({type(exc).__name__})"

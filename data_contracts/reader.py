"""Finding a table's files in a dataset folder and reading them as they are."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data_contracts.errors import UnreadableTableError

SUFFIXES = (".parquet", ".csv")
FILE_COLUMN = "_file"  # the row's file, by its place among the table's files (reading order)
_PATH = "_path"  # a multi-file scan's path of the row's file
# Rows a multi-file scan numbers: its row index is 32 bits.
_SCAN_ROWS = 2**32 - 2
_COUNTED_AT_ONCE = 64  # files whose rows are counted side by side


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
    return _named(lf, names).with_columns(pl.col("_row").cast(pl.Int64), pl.lit(source.name).alias("_source"))


def _named(lf: pl.LazyFrame, names: list[str]) -> pl.LazyFrame:
    """``lf`` with its columns named without surrounding spaces or a byte-order mark."""
    return lf.rename({n: n.strip().lstrip("\ufeff") for n in names if n != n.strip().lstrip("\ufeff")})


def scan_files(files: list[SourceFile]) -> list[tuple[pl.LazyFrame, SourceFile]]:
    """The rows of ``files`` in reading order, as :func:`scan_raw` reads them, with
    ``FILE_COLUMN``; each scan with the first of its files.

    Consecutive Parquet files of one schema are read in one scan: a scan costs milliseconds
    per file and per pass, however few its rows (ten million lines in 2 005 files took 313 s
    to load in partitions one scan per file, 12 s in one). Each CSV file has its own scan,
    for its own separator and decimal mark.
    """
    scans = [scan_raw(f) for f in files]  # each file's schema, read now: an unreadable file is named
    schemas = [scan.collect_schema() for scan in scans]
    rows = iter(row_counts([scan for f, scan in zip(files, scans, strict=True) if not f.is_csv]))
    runs: list[list[tuple[int, int]]] = []  # per scan, the place and row count of each of its files
    total = 0  # rows in the last scan
    for place, source in enumerate(files):
        count = 0 if source.is_csv else next(rows)
        first = runs[-1][0][0] if runs else None
        if (
            first is None
            or source.is_csv
            or files[first].is_csv
            or schemas[first] != schemas[place]
            or _folder(source) is None
            or _folder(source) != _folder(files[first])
            or total + count > _SCAN_ROWS
        ):
            runs.append([(place, count)])
            total = count
        else:
            runs[-1].append((place, count))
            total += count
    return [(_scan_run(run, files, scans), files[run[0][0]]) for run in runs]


def row_counts(scans: list[pl.LazyFrame]) -> list[int]:
    """The rows of each scan (of a Parquet file: from its metadata), a batch of scans at a
    time: thousands at once exhaust Polars' threads for blocking reads."""
    counts: list[int] = []
    for start in range(0, len(scans), _COUNTED_AT_ONCE):
        batch = scans[start : start + _COUNTED_AT_ONCE]
        counts += [int(frame.item()) for frame in pl.collect_all([scan.select(pl.len()) for scan in batch])]
    return counts


def _scan_run(run: list[tuple[int, int]], files: list[SourceFile], scans: list[pl.LazyFrame]) -> pl.LazyFrame:
    """One scan of the files at the consecutive places ``run`` lists, each with its row count.

    A row's file is its path's position in an enum of the paths, its name the path less the
    dataset folder, and its row number the scan's less the rows of the files before it: each
    an expression of the row alone, so that the engine keeps streaming and a filter still
    reaches the scan (``replace_strict`` held every row, 5 GB to split 20 million lines in
    partitions; ``gather`` kept filters above it).
    """
    first = run[0][0]
    if len(run) == 1:
        return scans[first].with_columns(pl.lit(first, pl.UInt32).alias(FILE_COLUMN))
    paths = [str(files[place].path) for place, _ in run]
    rows_before = pl.Series([0, *itertools.accumulate(n for _, n in run)][:-1], dtype=pl.Int64)
    position = pl.col(_PATH).cast(pl.Enum(paths)).to_physical().cast(pl.UInt32)
    lf = pl.scan_parquet(paths, row_index_name="_row", row_index_offset=1, include_file_paths=_PATH)
    return (
        _named(lf, lf.collect_schema().names())
        .with_columns(
            (position + first).alias(FILE_COLUMN),
            pl.col("_row").cast(pl.Int64)
            - position.map_batches(rows_before.gather, return_dtype=pl.Int64, is_elementwise=True),
            pl.col(_PATH).str.slice(len(_folder(files[first]) or "")).alias("_source"),
        )
        .drop(_PATH)
    )


def _folder(source: SourceFile) -> str | None:
    """The dataset folder's path, with a separator, that the file's path begins with (None
    when its name is not the end of its path)."""
    path = str(source.path)
    return path[: len(path) - len(source.name)] if path.endswith(source.name) else None


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

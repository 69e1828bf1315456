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


def scan_raw(source: SourceFile) -> pl.LazyFrame:
    """The file's rows as stored (CSV: all text), with ``_source`` and 1-based ``_row``."""
    try:
        if source.is_csv:
            lf = pl.scan_csv(
                source.path,
                separator=csv_separator(source.path),
                infer_schema=False,
                encoding="utf8-lossy",
            )
        else:
            lf = pl.scan_parquet(source.path)
        names = lf.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as exc:
        msg = f"Cannot read {source.name}: {str(exc).splitlines()[0]}"
        raise UnreadableTableError(msg) from exc
    renames = {n: n.strip().lstrip("\ufeff") for n in names if n != n.strip().lstrip("\ufeff")}
    return (
        lf.rename(renames)
        .with_row_index("_row", offset=1)
        .with_columns(pl.col("_row").cast(pl.Int64), pl.lit(source.name).alias("_source"))
    )

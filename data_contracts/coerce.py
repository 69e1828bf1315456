"""Turning a file's raw columns into the contract's types, remembering what did not parse."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from data_contracts import parsers
from data_contracts.errors import MissingColumnError
from data_contracts.reader import BEYOND_HEADER, FILE_COLUMN, SourceFile, csv_separator, scan_files
from data_contracts.tables import TableSpec


def _text_parser(dtype: pl.DataType, *, decimal_comma: bool) -> Callable[[pl.Expr], pl.Expr]:
    if dtype == pl.Date:
        return parsers.parse_date
    if dtype == pl.Time:
        return parsers.parse_time
    if dtype == pl.Datetime:
        return parsers.parse_datetime
    if dtype == pl.Float64:
        return lambda e: parsers.parse_decimal(e, decimal_comma=decimal_comma)
    if dtype == pl.Int64:
        return parsers.parse_integer
    if dtype == pl.Boolean:
        return parsers.parse_boolean
    return parsers.parse_text


_GIVEN = "_given_"  # prefix of the columns that say a value was given (see coerce)
# Types whose values must also fall within the plausible years (``parsers.DATE_YEARS``).
DATED = (pl.Date, pl.Datetime)


def _as_stored(raw: pl.DataType, target: pl.DataType, text: bool) -> bool:
    """Typed storage (Parquet) of the contract's type: nothing to parse, nothing malformed."""
    return raw == target and not text and target not in DATED


def _typed(name: str, raw: pl.DataType, target: pl.DataType, decimal_comma: bool) -> pl.Expr:
    """The raw column in the contract's type; null where a value does not fit it (but for the
    plausible years of a date, checked by :func:`coerce` on the typed column)."""
    col = pl.col(name)
    if raw.is_nested():  # a list or a struct where the contract has one value
        return pl.lit(None, dtype=target)
    if raw == pl.String:
        return _text_parser(target, decimal_comma=decimal_comma)(col)
    if target == pl.String:
        return col.cast(pl.String)
    if target == pl.Int64 and raw.is_float():
        # 1.5 is not a quantity: a cast would truncate it to 1.
        return pl.when(col == col.round()).then(col.cast(target, strict=False))
    return col.cast(target, strict=False)


def coerce_files(files: list[SourceFile], spec: TableSpec) -> pl.LazyFrame:
    """:func:`coerce` for the rows of ``files``, in reading order, with ``FILE_COLUMN``: a CSV
    file is text, with decimal commas when ``;``-separated."""
    typed = []
    for raw, first in scan_files(files):
        decimal_comma = first.is_csv and csv_separator(first.path) == ";"
        typed.append(coerce(raw, spec, first.name, text=first.is_csv, decimal_comma=decimal_comma))
    return pl.concat(typed, how="vertical")


def coerce(raw: pl.LazyFrame, spec: TableSpec, source: str, *, text: bool, decimal_comma: bool) -> pl.LazyFrame:
    """Typed contract columns plus ``_source``, ``_row`` (and ``FILE_COLUMN`` when ``raw`` has
    it) and ``_malformed`` (column names).

    ``text``: the values were written as text (a CSV file, posted records), so every one is
    parsed, and one that is not valid UTF-8 says so.
    """
    present = raw.collect_schema()
    missing = [c for c in spec.required_columns if c not in present]
    if missing:
        msg = (
            f"Table '{spec.name}' ({source}) lacks required column(s) "
            f"{', '.join(missing)}; found: {', '.join(n for n in present if n[0] != '_')}"
        )
        raise MissingColumnError(msg)
    # First the text to parse is trimmed, once: each trim writes every value anew, and trimming
    # inside the parsers cost a fifth of typing CSV lines. Then two steps: the typed values,
    # then what did not parse, read from them. In one step every parser would run twice
    # (Polars does not share a parse between expressions).
    parsed = [
        n
        for n, target in spec.dtypes.items()
        if present.get(n) == pl.String and not _as_stored(present[n], target, text)
    ]
    raw = raw.with_columns(parsers.trim(pl.col(n)) for n in parsed)
    typed: list[pl.Expr] = []
    # Step 1's flags: per parsed column, whether a value was given; and, for text, whether the
    # row had fields beyond its header or bytes that were not UTF-8.
    given: list[pl.Expr] = []
    checked: dict[str, pl.Expr] = {}  # per parsed column, its value in step 2
    for name, target in spec.dtypes.items():
        if name not in present:
            typed.append(pl.lit(None, dtype=target).alias(name))
            continue
        if _as_stored(present[name], target, text):
            typed.append(pl.col(name))
            continue
        typed.append(_typed(name, present[name], target, decimal_comma).alias(name))
        raw_value = pl.col(name)
        if present[name] == pl.String:
            raw_value = parsers.parse_text(raw_value)
        given.append(raw_value.is_not_null().alias(f"{_GIVEN}{name}"))
        checked[name] = parsers.within_years(pl.col(name)) if target in DATED else pl.col(name)
    malformed = [
        pl.when(pl.col(f"{_GIVEN}{name}") & value.is_null()).then(pl.lit(name)) for name, value in checked.items()
    ]
    if BEYOND_HEADER in present:  # a CSV row with more fields than its header
        given.append(pl.col(BEYOND_HEADER).is_not_null().alias(f"{_GIVEN}row"))
        malformed.append(pl.when(pl.col(f"{_GIVEN}row")).then(pl.lit("row")))
    if text:  # bytes that were not UTF-8 (read as U+FFFD): the values are not what was meant
        texts = [c for c in spec.dtypes if c in present]
        garbled = pl.any_horizontal(pl.col(texts).str.contains("\ufffd", literal=True).fill_null(False))
        given.append(garbled.alias(f"{_GIVEN}encoding"))
        malformed.append(pl.when(pl.col(f"{_GIVEN}encoding")).then(pl.lit("encoding")))
    flags = pl.concat_list(malformed).list.drop_nulls() if malformed else pl.lit([], dtype=pl.List(pl.String))
    columns = [checked[name].alias(name) if name in checked else pl.col(name) for name in spec.dtypes]
    provenance = [c for c in ("_source", "_row", FILE_COLUMN) if c in present]
    return raw.select(*provenance, *typed, *given).select(*provenance, *columns, flags.alias("_malformed"))

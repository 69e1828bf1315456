"""What a ruleset derives for each line, as Python functions of one line, for the few lines of a
real-time check.

``DurableRuleset.derived`` builds these values as Polars expressions: over a few lines, one
query of them cost more than the rest of the rules worker's call. Each shape of value has a
twin here, built from the same declaration: a deadline (years, or months after the month's
end), a condition of the catalog's SQL subset (:mod:`rules.conditions`), an instant in
milliseconds, a key of columns written as text. A twin is given only for the types whose
Polars results it reproduces exactly; for any other, the builder says ``None`` and the caller
keeps Polars. Tested equal to Polars on generated data and on Hypothesis lines
(``tests/rules/test_durable_engine.py``).
"""

from __future__ import annotations

import calendar
import operator
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

import polars as pl

from data_contracts.records import Row
from rules.conditions import Column, Compare, IsNull, disjunctive_form

Derive = Callable[[Row], Any]

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DAY = _EPOCH.date()
_MILLISECOND = timedelta(milliseconds=1)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# Column types a condition compares as Python compares their values, with the literals that
# fit each: text (a categorical reads as its text, and is only tested equal or not), integers
# and booleans. Not floats: Polars holds NaN equal to itself and above every number.
_INTEGER = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
# How Polars writes a value of these types as text (a time without its fraction of a second).
_AS_TEXT: dict[type[pl.DataType], Callable[[Any], str]] = {
    pl.String: str,
    pl.Categorical: str,
    pl.Enum: str,
    pl.Date: date.isoformat,
    pl.Time: lambda value: value.strftime("%H:%M:%S"),
    pl.Boolean: lambda value: "true" if value else "false",
    **dict.fromkeys(_INTEGER, str),
}


def years_later(column: str, years: int) -> Derive:
    """``column``'s date ``years`` later; 29 February becomes 28 February, as Polars' ``offset_by``."""

    def derive(row: Row) -> date | None:
        day: date | None = row[column]
        if day is None:
            return None
        year = day.year + years
        return day.replace(year=year, day=min(day.day, calendar.monthrange(year, day.month)[1]))

    return derive


def month_end_later(column: str, months: int) -> Derive:
    """The last day of the month ``months`` after ``column``'s date's month."""

    def derive(row: Row) -> date | None:
        day: date | None = row[column]
        if day is None:
            return None
        year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
        return date(year, month + 1, calendar.monthrange(year, month + 1)[1])

    return derive


def epoch_milliseconds(column: str, schema: Mapping[str, pl.DataType]) -> Derive | None:
    """``column``'s instant in milliseconds since 1970, rounded down, as ``dt.epoch("ms")``."""
    if not isinstance(schema.get(column), pl.Datetime) or schema[column].time_zone is not None:  # type: ignore[attr-defined]
        return None

    def derive(row: Row) -> int | None:
        instant: datetime | None = row[column]
        return None if instant is None else _milliseconds(instant)

    return derive


def key(columns: list[str], schema: Mapping[str, pl.DataType], null: str, separator: str) -> Derive | None:
    """``columns`` written as text (``null`` for a missing value) and joined by ``separator``,
    as ``concat_str`` of their casts to text."""
    writers = [_AS_TEXT.get(schema[c].base_type()) if c in schema else None for c in columns]
    if any(w is None for w in writers):
        return None
    parts = list(zip(columns, writers, strict=True))

    def derive(row: Row) -> str:
        return separator.join(null if row[c] is None else write(row[c]) for c, write in parts)  # type: ignore[misc]

    return derive


def condition(text: str, schema: Mapping[str, pl.DataType]) -> Derive | None:
    """Whether the SQL condition ``text`` is TRUE for a line (unknown counts as not), as
    ``pl.sql_expr(text).fill_null(False)``: its alternatives (:func:`disjunctive_form`), an
    atom holding only on values that are not null."""
    tests: list[list[Callable[[Row], bool]]] = []
    for conjunction in disjunctive_form(text):
        atoms = []
        for atom in conjunction:
            test = _atom(atom, schema)
            if test is None:
                return None
            atoms.append(test)
        tests.append(atoms)

    def derive(row: Row) -> bool:
        return any(all(test(row) for test in atoms) for atoms in tests)

    return derive


def _atom(atom: Compare | IsNull, schema: Mapping[str, pl.DataType]) -> Callable[[Row], bool] | None:
    if isinstance(atom, IsNull):
        if atom.column not in schema:
            return None
        column = atom.column
        return (lambda row: row[column] is not None) if atom.negated else (lambda row: row[column] is None)
    operands = [_operand(side, schema) for side in (atom.left, atom.right)]
    kinds = {kind for kind, _ in operands}
    if kinds == {"text", "category"}:  # a categorical column against text: compared as text
        kinds = {"category"}
    if None in kinds or len(kinds) > 1:  # a type not handled, or text against a number
        return None
    if kinds == {"category"} and atom.op not in ("=", "!="):  # ordered by Polars its own way
        return None
    (_, left), (_, right) = operands
    compare = _COMPARE[atom.op]

    def test(row: Row) -> bool:
        a, b = left(row), right(row)
        return a is not None and b is not None and compare(a, b)

    return test


def _operand(side: Column | str | int | float | bool, schema: Mapping[str, pl.DataType]) -> tuple[str | None, Derive]:
    """An operand's kind (text, number, boolean; None when not handled) and its value."""
    if isinstance(side, Column):
        dtype = schema.get(side.name)
        base = dtype.base_type() if dtype is not None else None
        kinds = {pl.String: "text", pl.Categorical: "category", pl.Enum: "category", pl.Boolean: "boolean"}
        kind = "integer" if base in _INTEGER else kinds.get(base)  # type: ignore[arg-type]
        name = side.name
        return kind, lambda row: row[name]
    if isinstance(side, float):  # compared with an integer column, Polars compares floats
        return None, lambda _: side
    kind = "boolean" if isinstance(side, bool) else "text" if isinstance(side, str) else "integer"
    return kind, lambda _: side


def encoder(dtype: pl.DataType) -> Callable[[Any], Any] | None:
    """A value of ``dtype`` as the rules worker's facts carry it (``durable_engine._ENCODED``):
    a date in days and a datetime in milliseconds since 1970, a time in nanoseconds since
    midnight; None when values travel as they are."""
    base = dtype.base_type()
    if base == pl.Date:
        return lambda value: None if value is None else (value - _EPOCH_DAY).days
    if base == pl.Time:
        return lambda value: None if value is None else _nanoseconds(value)
    if base == pl.Datetime:
        return lambda value: None if value is None else _milliseconds(value)
    return None


def _milliseconds(instant: datetime) -> int:
    """Milliseconds since 1970, rounded down (before 1970 too), as Polars counts them."""
    return (instant - _EPOCH) // _MILLISECOND


def _nanoseconds(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000_000 + value.microsecond * 1000

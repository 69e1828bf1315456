"""Whether a date falls in a period whose end may be open (null)."""

from __future__ import annotations

import polars as pl

_OPEN_END = pl.date(9999, 12, 31)


def within(date: str, start: str, end: str, *, end_inclusive: bool = True) -> pl.Expr:
    """``start <= date <= end`` (or ``< end``); a null end never closes the period."""
    day, last = pl.col(date), pl.col(end).fill_null(_OPEN_END)
    return (pl.col(start) <= day) & ((day <= last) if end_inclusive else (day < last))

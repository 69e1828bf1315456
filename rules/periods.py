"""Whether a date falls in a period whose end may be open (null)."""

from __future__ import annotations

from datetime import date

import polars as pl

OPEN_END = date(9999, 12, 31)  # the end of a period left open


def within(date: str, start: str, end: str, *, end_inclusive: bool = True) -> pl.Expr:
    """``start <= date <= end`` (or ``< end``); a null end never closes the period."""
    day, last = pl.col(date), pl.col(end).fill_null(pl.lit(OPEN_END))
    return (pl.col(start) <= day) & ((day <= last) if end_inclusive else (day < last))

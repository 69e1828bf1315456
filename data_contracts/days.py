"""Whole days between dates, counted on day numbers."""

from __future__ import annotations

import polars as pl


def days_between(earlier: pl.Expr, later: pl.Expr) -> pl.Expr:
    """Whole days from the date ``earlier`` to the date ``later`` (Int64, null where either is;
    a datetime counts by its day).

    The same count as ``(later - earlier).dt.total_days()`` for dates, read off their day
    numbers: Polars subtracts dates through durations, converting both to datetimes first, and
    took 20 ms for the 2.5 million lines of a partition against 4.5 ms.
    """
    return later.cast(pl.Date).cast(pl.Int64) - earlier.cast(pl.Date).cast(pl.Int64)

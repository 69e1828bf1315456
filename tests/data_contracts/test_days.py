"""Whole days between dates, on day numbers, against Polars' own date difference."""

from __future__ import annotations

from datetime import date, datetime

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from data_contracts.days import days_between

DATES = st.none() | st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))


@given(st.lists(st.tuples(DATES, DATES), min_size=1, max_size=50))
def test_days_between_dates_is_polars_date_difference(pairs: list[tuple[date | None, date | None]]) -> None:
    frame = pl.DataFrame(pairs, schema={"earlier": pl.Date, "later": pl.Date}, orient="row")
    counted = frame.select(days_between(pl.col("earlier"), pl.col("later")).alias("days"))
    expected = frame.select((pl.col("later") - pl.col("earlier")).dt.total_days().alias("days"))
    assert counted.schema == expected.schema
    assert counted.equals(expected)


def test_a_datetime_counts_by_its_day() -> None:
    """A minute to midnight and a minute past it count by their day alone."""
    frame = pl.DataFrame(
        {
            "service": [date(2025, 1, 31), date(1969, 12, 31)],
            "sent": [datetime(2025, 3, 1, 23, 59), datetime(1970, 1, 1, 0, 1)],
        }
    )
    assert frame.select(days_between(pl.col("service"), pl.col("sent"))).to_series().to_list() == [29, 1]

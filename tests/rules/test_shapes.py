"""Compiler details that the rule-boundary tests cannot reach on their own."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from rules import load_catalog
from rules.catalog import DeadlineCheck
from rules.shapes import _fewest_days, regime_deadline

CATALOG = load_catalog()
REGIMES = [
    (rule, regime, legislation)
    for rule in CATALOG
    for check in rule.checks
    if isinstance(check, DeadlineCheck)
    for regime in check.regimes
    for legislation in CATALOG.legislations
]


@pytest.mark.parametrize(("rule", "regime", "legislation"), REGIMES, ids=lambda v: getattr(v, "name", v))
def test_no_deadline_is_sooner_than_the_bound_that_skips_calendar_arithmetic(rule, regime, legislation) -> None:  # type: ignore[no-untyped-def]
    """Every day from 2000 to 2030, 29 February and month ends included."""
    days = pl.DataFrame({"service_date": pl.date_range(date(2000, 1, 1), date(2030, 12, 31), eager=True)})
    delays = days.select((regime_deadline(regime, rule, legislation) - pl.col("service_date")).dt.total_days())
    fewest = _fewest_days(regime, rule, legislation)
    assert delays.to_series().min() >= fewest
    assert delays.to_series().min() - fewest < 4, "the bound should stay close, or the filter skips nothing"

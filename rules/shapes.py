"""Compilers from check declarations to lazy Polars plans.

Each compiler takes a check and the enriched lines and returns a LazyFrame with one row per
flagged line: ``_i`` (the line's row in the enriched frame), ``claim_id``, ``reason`` and
``evidence`` (a JSON object). Nothing here knows a rule by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import polars as pl

from data_contracts.days import days_between
from data_contracts.keys import rows_that_may_repeat
from rules import derived
from rules.catalog import (
    BurstCheck,
    Check,
    DeadlineCheck,
    DuplicateKeyCheck,
    LinePredicateCheck,
    ReferencePeriodCheck,
    Regime,
    RuleDeclaration,
)
from rules.derived import Derive
from rules.periods import within

ROW = "_i"


def _evidence(columns: list[str], *extra: pl.Expr) -> pl.Expr:
    fields = [*(pl.col(c) for c in columns), *extra]
    if not fields:
        return pl.lit("{}")
    return pl.struct(fields).struct.json_encode().alias("evidence")


def regime_deadline(regime: Regime, rule: RuleDeclaration, legislation: str) -> pl.Expr:
    """The last day a line under ``regime`` may be submitted."""
    service = pl.col("service_date")
    if regime.years is not None:
        return service.dt.offset_by(f"{int(rule.resolve(regime.years, legislation))}y")
    months = int(rule.resolve(regime.months_after_month_end or "", legislation))
    return service.dt.offset_by(f"{months}mo").dt.month_end()


def regime_deadline_twin(regime: Regime, rule: RuleDeclaration, legislation: str) -> Derive:
    """:func:`regime_deadline` as a Python function of a line (:mod:`rules.derived`)."""
    if regime.years is not None:
        return derived.years_later("service_date", int(rule.resolve(regime.years, legislation)))
    months = int(rule.resolve(regime.months_after_month_end or "", legislation))
    return derived.month_end_later("service_date", months)


def _fewest_days(regime: Regime, rule: RuleDeclaration, legislation: str) -> int:
    """A lower bound of ``deadline - service_date`` under ``regime``, whatever the date.

    A year is at least 365 days even from 29 February, a month at least 28.
    """
    if regime.years is not None:
        return 365 * int(rule.resolve(regime.years, legislation))
    return 28 * int(rule.resolve(regime.months_after_month_end or "", legislation))


def _deadline(
    check: DeadlineCheck, rule: RuleDeclaration, legislation: str, lines: pl.LazyFrame, _: Any
) -> pl.LazyFrame:
    # Each line falls under the first regime whose condition holds. Calendar arithmetic is
    # costly on millions of lines, so it only runs on those submitted later than the
    # regime's shortest possible delay, counted on day numbers: the only ones that can be late.
    compare = pl.col(check.compare)
    delay = days_between(pl.col("service_date"), compare)
    earlier: pl.Expr = pl.lit(False)
    late: list[pl.LazyFrame] = []
    for regime in check.regimes:
        condition = rule.sql(regime.when, legislation).fill_null(False)
        late.append(
            lines.filter(condition & ~earlier & (delay >= _fewest_days(regime, rule, legislation)))
            .select(
                ROW,
                "claim_id",
                compare,
                regime_deadline(regime, rule, legislation).alias("deadline"),
                pl.lit(regime.name).alias("regime"),
            )
            .filter(compare > pl.col("deadline"))
        )
        earlier = earlier | condition
    return pl.concat(late).select(
        ROW,
        "claim_id",
        (pl.lit(check.reason_prefix) + pl.col("regime")).alias("reason"),
        _evidence(
            ["regime", "deadline", check.compare],
            (compare - pl.col("deadline")).dt.total_days().alias("days_late"),
        ),
    )


def _line_predicate(
    check: LinePredicateCheck, rule: RuleDeclaration, legislation: str, lines: pl.LazyFrame, _: Any
) -> pl.LazyFrame:
    reason = pl.lit(check.reason) if check.reason else pl.col(check.reason_column or "")
    return lines.filter(rule.sql(check.when, legislation)).select(
        ROW, "claim_id", reason.alias("reason"), _evidence(check.evidence)
    )


def _burst(check: BurstCheck, rule: RuleDeclaration, legislation: str, lines: pl.LazyFrame, _: Any) -> pl.LazyFrame:
    gap = timedelta(minutes=float(rule.resolve(check.max_gap_minutes, legislation)))
    min_run = int(rule.resolve(check.min_run, legislation))
    order = pl.col(check.order_by)
    same_group = pl.all_horizontal(pl.col(c) == pl.col(c).shift(1) for c in check.partition_by)
    continues = (same_group & (order - order.shift(1) < gap)).fill_null(False)
    run = (~continues).cum_sum().alias("_run")
    return (
        lines.filter(rule.sql(check.where, legislation))
        .select(*dict.fromkeys([ROW, "claim_id", *check.partition_by, check.order_by, *check.evidence]))
        .sort(*check.partition_by, check.order_by, "claim_id")
        .with_columns(run)
        .with_columns(
            pl.len().over("_run").alias("burst_size"),
            ((order.max() - order.min()).over("_run").dt.total_seconds() / 60).alias("burst_span_minutes"),
            order.min().over("_run").alias("burst_first"),
            order.max().over("_run").alias("burst_last"),
        )
        .filter(pl.col("burst_size") >= min_run)
        .select(
            ROW,
            "claim_id",
            pl.lit(check.reason).alias("reason"),
            _evidence([*check.evidence, "burst_size", "burst_span_minutes", "burst_first", "burst_last"]),
        )
    )


def years_after_columns(check: ReferencePeriodCheck, rule: RuleDeclaration, legislation: str) -> list[pl.Expr]:
    """The reference dates ``years_after`` derives (29 February gives 28 February)."""
    return [
        pl.col(d.date).dt.offset_by(f"{int(rule.resolve(d.years, legislation))}y").alias(name)
        for name, d in check.years_after.items()
    ]


def reference_total_evidence(check: ReferencePeriodCheck) -> list[str]:
    """What a ``total`` check adds to the evidence: the total and how many rows made it."""
    return [f"{check.total}_total", "reference_rows"] if check.total else []


def _reference_period(
    check: ReferencePeriodCheck,
    rule: RuleDeclaration,
    legislation: str,
    lines: pl.LazyFrame,
    tables: Mapping[str, pl.LazyFrame],
) -> pl.LazyFrame:
    reference = tables[check.table].with_row_index("_r").with_columns(years_after_columns(check, rule, legislation))
    if check.where:
        lines = lines.filter(rule.sql(check.where, legislation))
    period = within(check.date, check.start, check.end, end_inclusive=check.end_inclusive)
    joined = lines.join(reference, on=check.key, how="inner", suffix="_reference").filter(period)
    if check.having:
        joined = joined.filter(rule.sql(check.having, legislation))
    if check.total:
        at_least = float(rule.resolve(check.at_least or 0, legislation))
        total, counted = reference_total_evidence(check)
        joined = joined.with_columns(
            pl.col(check.total).sum().over(ROW).round(2).alias(total), pl.len().over(ROW).alias(counted)
        ).filter(pl.col(total) >= at_least)
    reason = pl.lit(check.reason) if check.reason else pl.col(check.reason_column or "")
    return (
        joined.sort("claim_id", check.start, "_r")
        .unique("claim_id", keep="first")
        .select(
            ROW,
            "claim_id",
            reason.alias("reason"),
            _evidence([*check.evidence, *reference_total_evidence(check)]),
        )
    )


def _duplicate_key(
    check: DuplicateKeyCheck, rule: RuleDeclaration, legislation: str, lines: pl.LazyFrame, _: Any
) -> pl.LazyFrame:
    # Grouping treats nulls as equal, as the contract asks ("nulls equal").
    key = check.key
    return (
        rows_that_may_repeat(lines, pl.struct(key))
        .filter(pl.struct(key).is_duplicated())
        .select(*dict.fromkeys([ROW, "claim_id", *key, *check.keep_first_by, *check.evidence]))
        .sort(*key, *check.keep_first_by)
        .with_columns(
            pl.int_range(pl.len()).over(key).alias("_position"),
            pl.col("claim_id").first().over(key).alias("kept_claim_id"),
            pl.len().over(key).alias("duplicate_group_size"),
        )
        .filter(pl.col("_position") > 0)
        .select(
            ROW,
            "claim_id",
            pl.lit(check.reason).alias("reason"),
            _evidence([*check.evidence, "kept_claim_id", "duplicate_group_size"]),
        )
    )


Compiler = Callable[[Any, RuleDeclaration, str, pl.LazyFrame, Mapping[str, pl.LazyFrame]], pl.LazyFrame]
COMPILERS: dict[type, Compiler] = {
    DeadlineCheck: _deadline,
    LinePredicateCheck: _line_predicate,
    BurstCheck: _burst,
    ReferencePeriodCheck: _reference_period,
    DuplicateKeyCheck: _duplicate_key,
}


def compile_check(
    check: Check,
    rule: RuleDeclaration,
    legislation: str,
    lines: pl.LazyFrame,
    tables: Mapping[str, pl.LazyFrame],
) -> pl.LazyFrame:
    """The lines ``check`` flags: ``_i``, ``claim_id``, ``reason``, ``evidence``."""
    return COMPILERS[type(check)](check, rule, legislation, lines, tables)

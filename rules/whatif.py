"""What a legislation version changes against another, on real data."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from rules.catalog import Catalog, load_catalog
from rules.engine import enriched_lines, evaluate

BREAKDOWN = ("rule_id", "channel", "profession")


def affected_rules(catalog: Catalog, legislation: str, baseline: str) -> list[str]:
    """Rules whose parameters differ between the two legislations."""
    return [r.id for r in catalog if r.parameters_for(legislation) != r.parameters_for(baseline)]


def whatif(
    tables: Mapping[str, pl.LazyFrame],
    *,
    legislation: str,
    baseline: str = "current",
    catalog: Catalog | None = None,
) -> pl.DataFrame:
    """Lines, providers and amounts newly flagged (and no longer flagged) under ``legislation``.

    One row per rule, channel and profession with a change; ``change`` is ``newly_flagged``
    or ``no_longer_flagged``.
    """
    catalog = catalog or load_catalog()
    catalog.check_legislation(legislation)
    catalog.check_legislation(baseline)
    rule_ids = affected_rules(catalog, legislation, baseline)
    schema = {
        "change": pl.String,
        "rule_id": pl.String,
        "channel": pl.String,
        "profession": pl.String,
        "lines": pl.UInt32,
        "providers": pl.UInt32,
        "amount_at_stake_eur": pl.Float64,
    }
    if not rule_ids:
        return pl.DataFrame(schema=schema)
    lines = enriched_lines(tables)
    before = evaluate(tables, legislation=baseline, catalog=catalog, rule_ids=rule_ids, lines=lines)
    after = evaluate(tables, legislation=legislation, catalog=catalog, rule_ids=rule_ids, lines=lines)
    key = ["claim_id", "rule_id"]
    changes = pl.concat(
        [
            after.join(before, on=key, how="anti").with_columns(pl.lit("newly_flagged").alias("change")),
            before.join(after, on=key, how="anti").with_columns(pl.lit("no_longer_flagged").alias("change")),
        ]
    )
    return (
        changes.group_by("change", *BREAKDOWN)
        .agg(
            pl.len().alias("lines"),
            pl.col("provider_nihdi").n_unique().alias("providers"),
            pl.col("amount_at_stake_eur").sum().round(2).alias("amount_at_stake_eur"),
        )
        .cast(schema)  # type: ignore[arg-type]
        .sort("change", "rule_id", "amount_at_stake_eur", descending=[False, False, True])
    )

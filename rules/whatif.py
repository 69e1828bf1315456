"""What a legislation version changes against another, on real data."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import polars as pl

from rules.catalog import Catalog, load_catalog
from rules.engine import enriched_lines, evaluate

BREAKDOWN = ("rule_id", "channel", "profession")


def whatif(
    tables: Mapping[str, pl.LazyFrame],
    *,
    legislation: str,
    baseline: str = "current",
    catalog: Catalog | None = None,
    effective_from: date | None = None,
    baseline_effective_from: date | None = None,
) -> pl.DataFrame:
    """Lines, providers and amounts newly flagged (and no longer flagged) under ``legislation``.

    Compares two timelines: each legislation governs the lines served from its
    ``effective_from`` (the catalog's, or these arguments), ``current`` the earlier ones.
    One row per rule, channel and profession with a change; ``change`` is ``newly_flagged``
    or ``no_longer_flagged``.
    """
    catalog = catalog or load_catalog()
    catalog.check_legislation(legislation)
    catalog.check_legislation(baseline)
    # A timeline mixes its version with current: any rule either changes may differ.
    versions = {legislation, baseline, "current"}
    rule_ids = sorted({r for a in versions for b in versions for r in catalog.differing_rules(a, b)})
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
    before = evaluate(
        tables,
        legislation=baseline,
        catalog=catalog,
        rule_ids=rule_ids,
        lines=lines,
        effective_from=baseline_effective_from,
    )
    after = evaluate(
        tables, legislation=legislation, catalog=catalog, rule_ids=rule_ids, lines=lines, effective_from=effective_from
    )
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

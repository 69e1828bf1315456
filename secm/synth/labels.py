"""Comparing a run's flags with the generator's labels: what an exact engine must reproduce."""

from __future__ import annotations

from pathlib import Path

import polars as pl

KEY = ["claim_id", "rule_id", "reason"]


def mismatches(flags: pl.DataFrame, data: Path, legislation: str) -> pl.DataFrame:
    """Flags the labels do not list (``side`` = ``extra``) and labels no flag matches
    (``missing``), reasons included; empty when the engine recovers the labels exactly."""
    labels = pl.read_parquet(Path(data) / "labels" / "flags.parquet").filter(pl.col("legislation") == legislation)
    got, expected = flags.select(KEY), labels.select(KEY)
    return pl.concat(
        [
            got.join(expected, on=KEY, how="anti").with_columns(pl.lit("extra").alias("side")),
            expected.join(got, on=KEY, how="anti").with_columns(pl.lit("missing").alias("side")),
        ]
    )

"""The enriched billing line every rule reads: the line, its invoice, its provider, its
code's attributes on the date of service, and what the registry says of its number.

Columns added to the contract's ``billing_lines``:
``third_party_number``, ``effective_submitted_date``, ``is_third_party``, ``profession``,
``region``, ``qualification``, ``time_window``, ``code_setting``, ``window_start``,
``window_end``, ``code_fee_eur``, ``day_equivalent_code``, ``day_equivalent_fee_eur``,
``tp_status`` (``missing``, ``unregistered``, ``not_valid_on_date``, ``not_authorized``,
``ok``; null off third-party), ``tp_registry_periods``, ``tp_authorized_on_date``.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from data_contracts.schemas import THIRD_PARTY_CHANNELS
from rules.periods import within


def code_attributes(nomenclature: pl.LazyFrame, pairs: pl.LazyFrame) -> pl.LazyFrame:
    """Attributes of ``(nomenclature_code, service_date)`` pairs from the version in force.

    When several versions are in force the latest ``valid_from`` wins; a pair with no version
    in force keeps null attributes.
    """
    versions = nomenclature.select(
        pl.col("code").alias("nomenclature_code"),
        "time_window",
        pl.col("setting").alias("code_setting"),
        "window_start",
        "window_end",
        pl.col("fee_eur").alias("code_fee_eur"),
        "day_equivalent_code",
        "valid_from",
        "valid_to",
    )
    in_force = (
        pairs.join(versions, on="nomenclature_code", how="inner")
        .filter(within("service_date", "valid_from", "valid_to"))
        .sort("valid_from")
        .unique(["nomenclature_code", "service_date"], keep="last")
        .drop("valid_from", "valid_to")
    )
    day_fees = (
        in_force.select("day_equivalent_code", "service_date")
        .drop_nulls()
        .unique()
        .join(
            nomenclature.select(
                pl.col("code").alias("day_equivalent_code"),
                pl.col("fee_eur").alias("day_equivalent_fee_eur"),
                "valid_from",
                "valid_to",
            ),
            on="day_equivalent_code",
        )
        .filter(within("service_date", "valid_from", "valid_to"))
        .sort("valid_from")
        .unique(["day_equivalent_code", "service_date"], keep="last")
        .drop("valid_from", "valid_to")
    )
    return (
        pairs.join(in_force, on=["nomenclature_code", "service_date"], how="left")
        .join(day_fees, on=["day_equivalent_code", "service_date"], how="left")
        .with_columns(_code_day().alias("_code_day"))
        .drop("nomenclature_code", "service_date")
    )


def _code_day() -> pl.Expr:
    """One integer for (code, date): a join on it is several times faster than on both."""
    return pl.col("nomenclature_code").cast(pl.Int64, strict=False) * 1_000_000 + pl.col("service_date").cast(pl.Int64)


def registry_status(registry: pl.LazyFrame, uses: pl.LazyFrame) -> pl.LazyFrame:
    """The third-party uses the registry does not cover, with what it says of them.

    ``uses`` holds distinct ``(third_party_number, service_date, provider_nihdi)``; the
    answer keeps only those whose status is not ``ok`` (a handful among millions), so that
    joining it back onto the lines stays cheap.
    """
    valid = within("service_date", "valid_from", "valid_to")
    authorized = (
        uses.join(
            registry.select(
                "third_party_number", pl.col("authorized_nihdi").alias("provider_nihdi"), "valid_from", "valid_to"
            ),
            on=["third_party_number", "provider_nihdi"],
            how="inner",
        )
        .filter(valid)
        .select("third_party_number", "service_date", "provider_nihdi")
        .unique()
    )
    others = uses.join(
        authorized, on=["third_party_number", "service_date", "provider_nihdi"], how="anti", nulls_equal=True
    )
    on_date = (
        others.drop_nulls("third_party_number")
        .join(
            registry.select("third_party_number", "authorized_nihdi", "valid_from", "valid_to"), on="third_party_number"
        )
        .filter(valid)
        .group_by("third_party_number", "service_date", "provider_nihdi")
        .agg(pl.col("authorized_nihdi").unique().sort().str.join(", ").alias("tp_authorized_on_date"))
    )
    periods = registry.group_by("third_party_number").agg(
        pl.format("{}..{}", "valid_from", pl.col("valid_to").cast(pl.String).fill_null("open"))
        .unique()
        .sort()
        .str.join(", ")
        .alias("tp_registry_periods")
    )
    status = (
        pl.when(pl.col("third_party_number").is_null())
        .then(pl.lit("missing"))
        .when(pl.col("tp_registry_periods").is_null())
        .then(pl.lit("unregistered"))
        .when(pl.col("tp_authorized_on_date").is_null())
        .then(pl.lit("not_valid_on_date"))
        .otherwise(pl.lit("not_authorized"))
    )
    return (
        others.join(periods, on="third_party_number", how="left")
        .join(on_date, on=["third_party_number", "service_date", "provider_nihdi"], how="left", nulls_equal=True)
        .with_columns(status.alias("tp_status"))
    )


def enrich(tables: Mapping[str, pl.LazyFrame]) -> pl.LazyFrame:
    """The enriched billing lines: one row per valid line (row order is not kept)."""
    lines = tables["billing_lines"]
    invoices = tables["third_party_invoices"].select(
        "invoice_id", "third_party_number", pl.col("submitted_date").alias("_invoice_submitted")
    )
    providers = tables["providers"].select("provider_nihdi", "profession", "region")
    lines = (
        lines.join(invoices, on="invoice_id", how="left")
        .join(providers, on="provider_nihdi", how="left")
        .with_columns(
            pl.coalesce("submitted_date", "_invoice_submitted").alias("effective_submitted_date"),
            pl.col("channel").is_in(THIRD_PARTY_CHANNELS).alias("is_third_party"),
            pl.col("provider_nihdi").str.slice(8, 3).alias("qualification"),
            _code_day().alias("_code_day"),
        )
        .drop("_invoice_submitted")
    )
    pairs = lines.select("nomenclature_code", "service_date").unique()
    codes = code_attributes(tables["nomenclature"], pairs)
    uses = (
        lines.filter(pl.col("is_third_party")).select("third_party_number", "service_date", "provider_nihdi").unique()
    )
    exceptions = registry_status(tables["third_party_registry"], uses).with_columns(
        pl.lit(True).alias("is_third_party")
    )
    keys = ["third_party_number", "service_date", "provider_nihdi", "is_third_party"]
    return (
        lines.join(codes, on="_code_day", how="left")
        .join(exceptions, on=keys, how="left", nulls_equal=True)
        .with_columns(pl.when(pl.col("is_third_party")).then(pl.col("tp_status").fill_null("ok")).alias("tp_status"))
        .drop("_code_day")
    )

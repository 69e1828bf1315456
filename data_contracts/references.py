"""Checks of billing lines that need other tables: references and the submission date."""

from __future__ import annotations

import polars as pl


def reference_checks(
    lines: pl.LazyFrame,
    *,
    providers: pl.LazyFrame,
    invoices: pl.LazyFrame,
    nomenclature: pl.LazyFrame,
) -> tuple[pl.LazyFrame, pl.Expr]:
    """Billing lines with one boolean column per failed check, and the reasons expression.

    The reasons (a list of codes) are built only for the rows that fail: lists are costly
    on ten million rows, booleans are not.
    """
    invoice_dates = invoices.select(
        "invoice_id",
        pl.col("submitted_date").alias("_invoice_submitted"),
        pl.lit(True).alias("_invoice_found"),
    )
    provider_ids = providers.select("provider_nihdi").collect().to_series().implode()
    codes = nomenclature.select("code").unique().collect().to_series().implode()
    effective = pl.coalesce("submitted_date", "_invoice_submitted")
    checks = {
        "unknown_provider": ~pl.col("provider_nihdi").is_in(provider_ids),
        "unknown_invoice": pl.col("invoice_id").is_not_null() & pl.col("_invoice_found").is_null(),
        "unknown_nomenclature_code": ~pl.col("nomenclature_code").is_in(codes),
        "service_after_submission": (pl.col("service_date") > effective).fill_null(False),
    }
    checked = (
        lines.join(invoice_dates, on="invoice_id", how="left", maintain_order="left")
        .with_columns(check.alias(f"_fails_{code}") for code, check in checks.items())
        .with_columns(pl.any_horizontal(f"_fails_{code}" for code in checks).alias("_fails"))
        .drop("_invoice_submitted", "_invoice_found")
    )
    reasons = pl.concat_list(pl.when(pl.col(f"_fails_{code}")).then(pl.lit(code)) for code in checks).list.drop_nulls()
    return checked, reasons.alias("_reasons")

"""Checks of billing lines that need other tables: references and the submission date."""

from __future__ import annotations

import polars as pl


def reference_reasons(
    lines: pl.LazyFrame,
    *,
    providers: pl.LazyFrame,
    invoices: pl.LazyFrame,
    nomenclature: pl.LazyFrame,
) -> pl.LazyFrame:
    """Billing lines with a ``_reasons`` list: empty when every reference holds."""
    invoice_dates = invoices.select(
        pl.col("invoice_id"), pl.col("submitted_date").alias("_invoice_submitted"), pl.lit(True).alias("_invoice_found")
    )
    effective = pl.coalesce("submitted_date", "_invoice_submitted")
    checks = {
        "unknown_provider": ~pl.col("provider_nihdi").is_in(
            providers.select("provider_nihdi").collect().to_series().implode()
        ),
        "unknown_invoice": pl.col("invoice_id").is_not_null() & pl.col("_invoice_found").is_null(),
        "unknown_nomenclature_code": ~pl.col("nomenclature_code").is_in(
            nomenclature.select("code").unique().collect().to_series().implode()
        ),
        "service_after_submission": (pl.col("service_date") > effective).fill_null(False),
    }
    reasons = pl.concat_list([pl.when(check).then(pl.lit(code)) for code, check in checks.items()])
    return (
        lines.join(invoice_dates, on="invoice_id", how="left", maintain_order="left")
        .with_columns(reasons.list.drop_nulls().alias("_reasons"))
        .drop("_invoice_submitted", "_invoice_found")
    )

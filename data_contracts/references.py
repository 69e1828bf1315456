"""Checks of billing lines that need other tables: references and the submission date."""

from __future__ import annotations

import polars as pl

from data_contracts.keys import looked_up

CHECKS = ("unknown_provider", "unknown_invoice", "unknown_nomenclature_code", "service_after_submission")


def failed_checks(
    lines: pl.DataFrame,
    *,
    providers: pl.DataFrame,
    invoices: pl.DataFrame,
    nomenclature: pl.DataFrame,
) -> pl.DataFrame:
    """One boolean column per check of :data:`CHECKS` (true: the line fails it), row for row.

    Only the key columns are read, so the wide lines are never copied.
    """
    invoice = looked_up(
        lines["invoice_id"],
        invoices.select(
            "invoice_id", pl.col("submitted_date").alias("_invoice_submitted"), pl.lit(True).alias("_found")
        ),
    )
    keys = pl.concat(
        [lines.select("provider_nihdi", "invoice_id", "nomenclature_code", "service_date", "submitted_date"), invoice],
        how="horizontal",
    ).lazy()
    effective = pl.coalesce("submitted_date", "_invoice_submitted")
    return (
        keys.select(
            unknown_provider=~pl.col("provider_nihdi").is_in(providers["provider_nihdi"].implode()),
            unknown_invoice=pl.col("invoice_id").is_not_null() & pl.col("_found").is_null(),
            unknown_nomenclature_code=~pl.col("nomenclature_code").is_in(nomenclature["code"].unique().implode()),
            service_after_submission=(pl.col("service_date") > effective).fill_null(False),
        )
        .select(CHECKS)
        .collect()
    )


def reasons() -> pl.Expr:
    """The codes of the failed checks, over :func:`failed_checks`' columns.

    Built only for the lines that fail: lists are costly on ten million rows, booleans are not.
    """
    return pl.concat_list(pl.when(pl.col(code)).then(pl.lit(code)) for code in CHECKS).list.drop_nulls()

"""Checks of billing lines that need other tables: references and the submission date."""

from __future__ import annotations

import polars as pl

from data_contracts.keys import looked_up

CHECKS = ("unknown_provider", "unknown_invoice", "unknown_nomenclature_code", "service_after_submission")


# A validated line's row among the valid invoices (null: it names none, or none found). A run's
# partitions keep it beside their valid lines, so that the enrichment reads each line's
# invoice by its row instead of looking the ids up a second time (``rules.context``).
INVOICE_ROW = "_invoice_row"


def invoice_rows(invoice_ids: pl.Series, invoices: pl.DataFrame) -> pl.Series:
    """Each of ``invoice_ids``' row in ``invoices`` (:data:`INVOICE_ROW`, null where none is)."""
    rows = invoices.select("invoice_id").with_row_index(INVOICE_ROW).select("invoice_id", INVOICE_ROW)
    return looked_up(invoice_ids, rows).to_series()


def failed_checks(
    lines: pl.DataFrame,
    *,
    providers: pl.DataFrame,
    invoices: pl.DataFrame,
    nomenclature: pl.DataFrame,
    rows: pl.Series,
) -> pl.DataFrame:
    """One boolean column per check of :data:`CHECKS` (true: the line fails it), row for row;
    ``rows``: the lines' :func:`invoice_rows` in ``invoices``.

    Only the key columns are read, so the wide lines are never copied.
    """
    keys = lines.select(
        "provider_nihdi",
        "invoice_id",
        "nomenclature_code",
        "service_date",
        "submitted_date",
        rows.alias(INVOICE_ROW),
        invoices["submitted_date"].gather(rows).alias("_invoice_submitted"),
    ).lazy()
    effective = pl.coalesce("submitted_date", "_invoice_submitted")
    return (
        keys.select(
            unknown_provider=~pl.col("provider_nihdi").is_in(providers["provider_nihdi"].implode()),
            unknown_invoice=pl.col("invoice_id").is_not_null() & pl.col(INVOICE_ROW).is_null(),
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

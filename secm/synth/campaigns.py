"""Providers answering a letter: a generated dataset where the contacted bill on time afterwards.

A campaign's impact estimate can only be trusted if it recovers an effect that is known. So
this rewrites a generated (Parquet) dataset as if the contacted providers had read their letter:
from ``after`` on, a ``response`` share of their late third-party invoices arrive on time
instead (ten days after the month of service, inside every channel's deadline), and the
late-billing labels of the lines on those invoices go. Nobody else changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

LATE_RULE = "LATE_ATTESTATION"
ON_TIME_DAYS = 10  # after the end of the month of service


def respond_to_letters(data: Path, contacted: Iterable[str], *, after: date, response: float, seed: int = 0) -> int:
    """Make ``response`` of the ``contacted`` providers' late invoices for services from
    ``after`` on arrive on time, in ``data``; how many invoices changed."""
    if not 0 <= response <= 1:
        msg = f"response must be between 0 and 1, not {response}"
        raise ValueError(msg)
    invoice_parts = sorted((data / "third_party_invoices").glob("*.parquet"))
    if not invoice_parts:
        msg = f"{data} has no Parquet third-party invoices (generate with --format parquet)"
        raise ValueError(msg)
    labels_path = data / "labels" / "flags.parquet"
    labels = pl.read_parquet(labels_path)
    late_claims = labels.filter(pl.col("rule_id") == LATE_RULE)["claim_id"].unique()
    late = (
        pl.scan_parquet(data / "billing_lines" / "*.parquet")
        .filter(
            pl.col("provider_nihdi").is_in(list(contacted))
            & pl.col("invoice_id").is_not_null()
            & pl.col("claim_id").is_in(late_claims.implode())
        )
        .group_by("invoice_id")
        .agg(pl.col("service_date").max().alias("_last"), pl.col("claim_id"))
        .filter(pl.col("_last") >= after)  # an invoice with a service from ``after`` on, all its late lines
        .with_columns(pl.col("_last").dt.month_end().alias("_month_end"))
        .sort("invoice_id")
        .collect()
    )
    answered = late.filter(pl.Series(np.random.default_rng(seed).random(late.height) < response))
    on_time = answered.select("invoice_id", (pl.col("_month_end") + pl.duration(days=ON_TIME_DAYS)).alias("_on_time"))
    for part in invoice_parts:
        invoices = pl.read_parquet(part)
        invoices.join(on_time, on="invoice_id", how="left", maintain_order="left").with_columns(
            pl.coalesce("_on_time", "submitted_date").alias("submitted_date")
        ).select(invoices.columns).write_parquet(part)
    claims = answered["claim_id"].explode()  # the late-labelled lines of the answered invoices
    labels.filter(~((pl.col("rule_id") == LATE_RULE) & pl.col("claim_id").is_in(claims.implode()))).write_parquet(
        labels_path
    )
    return answered.height

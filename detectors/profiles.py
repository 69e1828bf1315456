"""Billing profiles: one row per provider and period, built from valid lines and rule flags.

The features are what an inspector compares between a provider and their peers: how much
they bill, to whom, which codes, at what hours, how fast, through which channel, and how
often the rules catch them. Every feature is a plain number with a label in ``FEATURES``.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import polars as pl

from data_contracts.schemas import CHANNELS
from detectors import patient_mix

Period = Literal["year", "quarter"]
ID = "provider_nihdi"
PEER_ATTRIBUTES = ("profession", "qualification", "region")
PSEUDO_STATUSES = ("missing", "unregistered", "not_valid_on_date")
BURST_GAP_MINUTES = 10
# Codes are compared on fee only within the same kind of service: a night or home visit is
# dearer than an office consultation by nature; upcoding is the dearer variant of one service.
SERVICE_KIND = ("profession", "code_setting", "time_window")

FEATURES: dict[str, str] = {
    "lines": "billing lines",
    "patients": "distinct patients",
    "active_days": "days with billing",
    "lines_per_patient": "lines per patient",
    "lines_per_active_day": "lines per active day",
    "busiest_day_lines": "lines on the busiest day",
    "share_patients_seen_once": "share of patients seen only once",
    "repeat_intensity": "lines per returning patient",
    "high_fee_share": "share of lines on a dearer code than usual for the same kind of service",
    "evening_share": "share of evening codes",
    "night_share": "share of night codes",
    "weekend_share": "share of lines on weekends",
    "home_visit_share": "share of home visits",
    "code_mix_distance": "distance of the code mix from the profession's",
    "amount_per_patient": "amount reimbursed per patient (EUR)",
    "amount_per_line": "amount reimbursed per line (EUR)",
    "submission_delay_days": "median days from service to submission",
    "burst_share": f"share of lines typed within {BURST_GAP_MINUTES} minutes of the previous one",
    "third_party_share": "share of third-party lines",
    "pseudo_number_rate": "share of third-party lines on pseudo numbers",
    "rule_hit_rate": "share of lines flagged by a rule",
}

# Lines per billing channel: not scored, the denominators of late billing per channel.
CHANNEL_LINES: dict[str, str] = {channel: f"lines_via_{channel}" for channel in CHANNELS}

# Features that are a share of lines, as the per-line condition they count.
LINE_SHARES: dict[str, pl.Expr] = {
    "high_fee_share": pl.col("_high_fee"),
    "evening_share": pl.col("time_window") == "evening",
    "night_share": pl.col("time_window") == "night",
    "weekend_share": pl.col("service_date").dt.weekday() >= 6,
    "home_visit_share": pl.col("code_setting") == "home",
}


def period_expr(period: Period) -> pl.Expr:
    year = pl.col("service_date").dt.year().cast(pl.String)
    if period == "year":
        return year.alias("period")
    return pl.format("{}Q{}", year, pl.col("service_date").dt.quarter()).alias("period")


def period_bounds(period: str) -> tuple[date, date]:
    """The first day of a period as :func:`period_expr` names it (``2024``, ``2024Q2``) and the
    first day after it."""
    year, _, quarter = period.partition("Q")
    if not quarter:
        return date(int(year), 1, 1), date(int(year) + 1, 1, 1)
    first = 3 * (int(quarter) - 1) + 1
    return date(int(year), first, 1), (date(int(year), first + 3, 1) if first < 10 else date(int(year) + 1, 1, 1))


def _code_mix_distance(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Total variation distance between a provider's code shares and their profession's."""
    own = lines.group_by(ID, "period", "profession", "nomenclature_code").agg(pl.len().alias("n"))
    own = own.with_columns((pl.col("n") / pl.col("n").sum().over(ID, "period")).alias("p"))
    profession = (
        own.group_by("profession", "period", "nomenclature_code")
        .agg(pl.col("n").sum())
        .with_columns((pl.col("n") / pl.col("n").sum().over("profession", "period")).alias("q"))
        .drop("n")
    )
    return (
        own.join(profession, on=["profession", "period", "nomenclature_code"])
        .group_by(ID, "period")
        .agg((1 - pl.min_horizontal("p", "q").sum()).clip(0, 1).alias("code_mix_distance"))
    )


def provider_profiles(
    lines: pl.LazyFrame | pl.DataFrame,
    flags: pl.DataFrame,
    *,
    period: Period = "year",
    patients: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per ``(provider_nihdi, period)``: peer attributes, every feature of ``FEATURES``
    and the lines per channel (``CHANNEL_LINES``).

    ``lines`` are the enriched billing lines (``rules.enriched_lines``); ``flags`` the rule
    flags of the same data (only ``claim_id`` is read). With the ``patients`` table (not
    empty), also ``expected_<feature>`` for the provider's patient mix
    (:mod:`detectors.patient_mix`).
    """
    flagged = flags.lazy().select("claim_id").unique().with_columns(pl.lit(True).alias("_flagged"))
    base = (
        lines.lazy()
        .join(flagged, on="claim_id", how="left")
        .with_columns(
            period_expr(period),
            pl.col("_flagged").fill_null(False),
            (pl.col("code_fee_eur") > pl.col("code_fee_eur").median().over(*SERVICE_KIND)).alias("_high_fee"),
        )
    )
    keys = [ID, "period"]
    by_patient = base.group_by(*keys, "patient_id").agg(pl.len().alias("_n"))
    patient_list = by_patient.group_by(keys).agg(
        (pl.col("_n") == 1).mean().alias("share_patients_seen_once"),
        pl.col("_n").filter(pl.col("_n") > 1).mean().fill_null(0.0).alias("repeat_intensity"),
    )
    busiest = (
        base.group_by(*keys, "service_date")
        .agg(pl.len().alias("_n"))
        .group_by(keys)
        .agg(pl.col("_n").max().alias("busiest_day_lines"))
    )
    order = pl.col("encoded_at")
    same_day = (pl.col(ID) == pl.col(ID).shift(1)) & (pl.col("service_date") == pl.col("service_date").shift(1))
    typed = (
        base.select(*keys, "service_date", "encoded_at")
        .drop_nulls("encoded_at")
        .sort(ID, "service_date", "encoded_at")
        .with_columns(
            (same_day & ((order - order.shift(1)).dt.total_minutes() < BURST_GAP_MINUTES)).fill_null(False).alias("_b")
        )
        .group_by(keys)
        .agg(pl.col("_b").mean().alias("burst_share"))
    )
    third_party = pl.col("is_third_party")
    features = base.group_by(keys).agg(
        *(pl.col(c).drop_nulls().first() for c in PEER_ATTRIBUTES),
        pl.len().alias("lines"),
        pl.col("patient_id").n_unique().alias("patients"),
        pl.col("service_date").n_unique().alias("active_days"),
        *(share.mean().fill_null(0.0).alias(name) for name, share in LINE_SHARES.items()),
        pl.col("amount_reimbursed").sum().alias("_amount"),
        (pl.col("effective_submitted_date") - pl.col("service_date"))
        .dt.total_days()
        .median()
        .alias("submission_delay_days"),
        third_party.mean().alias("third_party_share"),
        (pl.col("tp_status").is_in(PSEUDO_STATUSES).filter(third_party).mean())
        .fill_null(0.0)
        .alias("pseudo_number_rate"),
        pl.col("_flagged").mean().alias("rule_hit_rate"),
        *((pl.col("channel") == channel).sum().alias(column) for channel, column in CHANNEL_LINES.items()),
    )
    profiles = (
        features.join(patient_list, on=keys, how="left")
        .join(busiest, on=keys, how="left")
        .join(typed, on=keys, how="left")
        .join(_code_mix_distance(base), on=keys, how="left")
        .with_columns(
            (pl.col("lines") / pl.col("patients")).alias("lines_per_patient"),
            (pl.col("lines") / pl.col("active_days")).alias("lines_per_active_day"),
            (pl.col("_amount") / pl.col("patients")).alias("amount_per_patient"),
            (pl.col("_amount") / pl.col("lines")).alias("amount_per_line"),
            pl.col("burst_share").fill_null(0.0),
        )
    )
    profiles = profiles.select(
        *keys, *PEER_ATTRIBUTES, *(pl.col(f).cast(pl.Float64) for f in FEATURES), *CHANNEL_LINES.values()
    ).sort(keys)
    patients = patients.lazy() if patients is not None else None
    if patients is None or not patients.select(pl.len()).collect().item():
        return profiles.collect()
    # One pass over the lines for both: the engine reads ``base`` once for the two plans.
    profiled, per_patient = pl.collect_all([profiles, patient_mix.per_patient(base, patients, keys, LINE_SHARES)])
    return profiled.join(patient_mix.expected_values(per_patient, keys), on=keys, how="left", maintain_order="left")

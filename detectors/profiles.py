"""Billing profiles: one row per provider and period, built from valid lines and rule flags.

The features are what an inspector compares between a provider and their peers: how much
they bill, to whom, which codes, at what hours, how fast, through which channel, and how
often the rules catch them. Every feature is a plain number with a label in ``FEATURES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

import polars as pl

from data_contracts.days import days_between
from data_contracts.errors import writing
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
Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

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

# Features that are a share of lines, as the per-line condition they count; and the one
# share that needs every provider's lines to decide (see ProfileParts).
HIGH_FEE = "high_fee_share"
LINE_SHARES: dict[str, pl.Expr] = {
    "evening_share": pl.col("time_window") == "evening",
    "night_share": pl.col("time_window") == "night",
    "weekend_share": pl.col("service_date").dt.weekday() >= 6,
    "home_visit_share": pl.col("code_setting") == "home",
}


def period_expr(period: Period) -> pl.Expr:
    """A line's period, named by its year (``2024``) or its quarter (``2024Q2``)."""
    return period_name(period, period_number(period))


def period_number(period: Period) -> pl.Expr:
    """A line's period as a number, its year times ten plus its quarter (0 by year): the
    profiles group millions of lines by period, and by a number far faster than by text."""
    number = pl.col("service_date").dt.year().cast(pl.Int32) * 10
    return (number if period == "year" else number + pl.col("service_date").dt.quarter()).alias("period")


PERIOD_YEAR = pl.col("period") // 10  # the year of a period numbered by :func:`period_number`


def with_period(lines: Frame, period: Period) -> Frame:
    """``lines`` with their ``period`` (:func:`period_number`), unless they carry it already,
    numbered for the same grain ``period``: a run's partition groups its lines by period or
    year four times (profiles, fairness attributes, two report counts), and a date's year is
    a calendar computation, 20 ms for the 2.5 million lines of a partition, made once."""
    if "period" in lines.collect_schema():
        return lines
    return lines.with_columns(period_number(period))


def period_name(period: Period, number: pl.Expr) -> pl.Expr:
    """The name of a period of grain ``period`` from its ``number`` (:func:`period_number`)."""
    if period == "year":
        return (number // 10).cast(pl.String).alias("period")
    return pl.format("{}Q{}", number // 10, number % 10).alias("period")


def period_bounds(period: str) -> tuple[date, date]:
    """The first day of a period as :func:`period_expr` names it (``2024``, ``2024Q2``) and the
    first day after it."""
    year, _, quarter = period.partition("Q")
    if not quarter:
        return date(int(year), 1, 1), date(int(year) + 1, 1, 1)
    first = 3 * (int(quarter) - 1) + 1
    return date(int(year), first, 1), (date(int(year), first + 3, 1) if first < 10 else date(int(year) + 1, 1, 1))


def _packed(high: pl.Expr, low: pl.Expr) -> pl.Expr:
    """Two unsigned 64-bit numbers as one 128-bit number, ``high`` above ``low``: it sorts and
    groups as the pair does."""
    return high.cast(pl.UInt128) * 2**64 + low.cast(pl.UInt128)


def sorted_as_pair(first: pl.Expr, then: pl.Expr) -> pl.Expr:
    """One 128-bit number per row that sorts as the pair ``(first, then)`` does: ``first`` (an
    unsigned 64-bit number) above, the 64 bits of ``then`` (a datetime) below, its sign bit
    flipped so that the numbers' order is the times'. Sorting millions of lines on it took
    two-thirds of the time a sort on the two columns took."""
    return _packed(first, then.cast(pl.Int64).cast(pl.UInt64, wrap_numerical=True) ^ pl.lit(2**63, pl.UInt64))


def _code_mix_distance(own: pl.LazyFrame) -> pl.LazyFrame:
    """Total variation distance between a provider's code shares and their profession's, from
    lines per provider, period, profession and code (``_n``)."""
    own = own.with_columns((pl.col("_n") / pl.col("_n").sum().over(ID, "period")).alias("p"))
    profession = (
        own.group_by("profession", "period", "nomenclature_code")
        .agg(pl.col("_n").sum())
        .with_columns((pl.col("_n") / pl.col("_n").sum().over("profession", "period")).alias("q"))
        .drop("_n")
    )
    return (
        own.join(profession, on=["profession", "period", "nomenclature_code"])
        .group_by(ID, "period")
        .agg((1 - pl.min_horizontal("p", "q").sum()).clip(0, 1).alias("code_mix_distance"))
    )


@dataclass(frozen=True)
class ProfileParts:
    """What the lines of some providers contribute to the profiles, reduced to rows per
    provider and period, so that partitions of the lines are profiled one at a time.

    Two features compare a provider with every provider, not only with their own lines: a
    fee is "dearer than usual" against the median of its kind of service over all lines,
    and the code mix against the profession's. Each part keeps what those need: lines per
    code (``codes``) and per kind of service and fee (``fees``, per patient stratum too, for
    the patient mix); :func:`combine_profiles` compares once every part is in.
    """

    local: pl.DataFrame  # per provider and period: the features only their lines decide
    codes: pl.DataFrame  # lines (``_n``) per provider, period, profession and code
    fees: pl.LazyFrame  # lines (``_n``) per provider, period, profession, stratum, kind and fee
    mix: pl.DataFrame | None  # patient-mix sums per provider, period, profession and stratum

    def spilled(self, path: Path) -> ProfileParts:
        """This part with ``fees``, its largest frame, written to ``path`` and read back lazily."""
        with writing(path.parent, "the profiles' parts"):
            self.fees.sink_parquet(path)
        return replace(self, fees=pl.scan_parquet(path))


def patient_key(patient: pl.Expr) -> pl.Expr:
    """A patient's id as the 128-bit number a profile groups its lines by: two 64-bit hashes of
    it under different seeds, side by side.

    Grouping lines by number rather than text is most of a profile's saving. A categorical
    key costs a lookup of every line's id in one table of every patient seen; two hashes cost
    a few nanoseconds. Among the eleven million insured, the chance that two pseudonyms share
    both hashes is below one in 10^24: the patients counted are the ids as written.
    """
    return _packed(patient.hash(seed=1), patient.hash(seed=2)).alias("patient_id")


def keyed_patients(patients: Frame) -> Frame:
    """``patients`` keyed as :func:`profile_parts` keys the lines' patients (:func:`patient_key`),
    unless they already are: a run in several partitions keys them once, not once per partition.
    """
    if patients.collect_schema()["patient_id"] == pl.UInt128:
        return patients
    return patients.with_columns(patient_key(pl.col("patient_id")))


def profile_parts(
    lines: pl.LazyFrame | pl.DataFrame,
    flags: pl.DataFrame,
    *,
    period: Period = "year",
    patients: pl.LazyFrame | pl.DataFrame | None = None,
) -> ProfileParts:
    """:class:`ProfileParts` of ``lines`` (enriched billing lines whose providers have all
    their lines here) and their rule ``flags`` (only ``claim_id`` is read)."""
    # A membership test, not a join: a join would copy every column of the lines.
    flagged = pl.col("claim_id").is_in(flags.get_column("claim_id").implode()).alias("_flagged")
    # Providers and patients keyed by a number (categorical, and two hashes), not by their text:
    # the groupings below are a profile's cost. The parts name providers by text.
    keyed = [pl.col(ID).cast(pl.Categorical), patient_key(pl.col("patient_id"))]
    named = [pl.col(ID).cast(pl.String), period_name(period, pl.col("period"))]
    base = with_period(lines.lazy(), period).with_columns(flagged, *keyed)
    keys = [ID, "period"]
    fee_keys = list(dict.fromkeys([*keys, *SERVICE_KIND, "code_fee_eur"]))  # the kind includes the profession
    patients = keyed_patients(patients.lazy()) if patients is not None else None
    if patients is not None and not patients.select(pl.len()).collect().item():
        patients = None
    # Each line with its patient's stratum, joined once: lines per patient (the patient list
    # and the patient mix) and lines per kind of service, fee and stratum (the dearer-fee
    # share) are then both read from the lines. Grouping lines by patient is a profile's
    # costliest step; joining the lines once cost less than joining each grouping.
    if patients is None:
        stratified = base.with_columns(pl.lit(None, pl.UInt8).alias("_stratum"))
    else:
        stratified = patient_mix.with_stratum(base, patients, PERIOD_YEAR)
    per_patient = stratified.group_by(*keys, "profession", "patient_id").agg(
        pl.col("_stratum").first(), pl.len().alias("_n"), pl.col("amount_reimbursed").sum().alias("_amount")
    )
    fees = stratified.group_by(*fee_keys, "_stratum").agg(pl.len().alias("_n")).with_columns(*named)
    busiest = (
        base.group_by(*keys, "service_date")
        .agg(pl.len().alias("_n"))
        .group_by(keys)
        .agg(pl.col("_n").max().alias("busiest_day_lines"))
    )
    order = pl.col("encoded_at")
    # A provider's day as one number: the provider's key and the day's number, 32 bits each,
    # packed without overlap.
    day_number = (pl.col("service_date").cast(pl.Int64) + 2**31).cast(pl.UInt64)
    day = (pl.col(ID).to_physical().cast(pl.UInt64) * 2**32 + day_number).alias("_day")
    same_day = pl.col("_day") == pl.col("_day").shift(1)
    typed = (
        base.select(*keys, day, "encoded_at")
        .drop_nulls("encoded_at")
        .sort(sorted_as_pair(pl.col("_day"), order))
        .with_columns(
            (same_day & ((order - order.shift(1)).dt.total_minutes() < BURST_GAP_MINUTES)).fill_null(False).alias("_b")
        )
        .group_by(keys)
        .agg(pl.col("_b").mean().alias("burst_share"))
    )
    third_party = pl.col("is_third_party")
    per_provider = base.group_by(keys).agg(
        *(pl.col(c).drop_nulls().first() for c in PEER_ATTRIBUTES),
        pl.len().alias("lines"),
        pl.col("service_date").n_unique().alias("active_days"),
        *(share.mean().fill_null(0.0).alias(name) for name, share in LINE_SHARES.items()),
        pl.col("amount_reimbursed").sum().alias("_amount"),
        third_party.mean().alias("third_party_share"),
        (pl.col("tp_status").is_in(PSEUDO_STATUSES).filter(third_party).mean())
        .fill_null(0.0)
        .alias("pseudo_number_rate"),
        pl.col("_flagged").mean().alias("rule_hit_rate"),
        *((pl.col("channel") == channel).sum().alias(column) for channel, column in CHANNEL_LINES.items()),
    )
    codes = base.group_by(*keys, "profession", "nomenclature_code").agg(pl.len().alias("_n")).with_columns(*named)
    delay = days_between(pl.col("service_date"), pl.col("effective_submitted_date")).alias("_delay")
    delays = counted_median(
        base.group_by(*keys, delay).agg(pl.len().alias("_n")), keys, "_delay", "submission_delay_days"
    )
    plans = [per_provider, busiest, typed, delays, codes, per_patient, fees]
    if patients is not None:  # the patient mix's shares of lines, summed per stratum (not per patient: fewer groups)
        plans.append(
            stratified.group_by(*keys, "profession", "_stratum").agg(
                sum_
                for name, share in LINE_SHARES.items()
                for sum_ in (share.sum().alias(f"_num_{name}"), share.count().alias(f"_den_{name}"))
            )
        )
    # One pass over the lines for all: the engine reads ``base`` once for every plan.
    provider_frame, busiest_frame, typed_frame, delays_frame, codes_frame, patient_frame, fees_frame, *shares = (
        pl.collect_all(plans)
    )
    n = pl.col("_n")
    patient_list = (
        patient_frame.lazy()
        .group_by(keys)
        .agg(
            pl.len().alias("patients"),
            (n == 1).mean().alias("share_patients_seen_once"),
            n.filter(n > 1).mean().fill_null(0.0).alias("repeat_intensity"),
        )
    )
    local = (
        provider_frame.lazy()
        .join(patient_list, on=keys, how="left")
        .join(busiest_frame.lazy(), on=keys, how="left")
        .join(typed_frame.lazy(), on=keys, how="left")
        .join(delays_frame.lazy(), on=keys, how="left")
        .with_columns(
            (pl.col("lines") / pl.col("patients")).alias("lines_per_patient"),
            (pl.col("lines") / pl.col("active_days")).alias("lines_per_active_day"),
            (pl.col("_amount") / pl.col("patients")).alias("amount_per_patient"),
            (pl.col("_amount") / pl.col("lines")).alias("amount_per_line"),
            pl.col("burst_share").fill_null(0.0),
        )
        .drop("_amount")
        .with_columns(*named)
    )
    if patients is None:
        return ProfileParts(local=local.collect(), codes=codes_frame, fees=fees_frame.lazy(), mix=None)
    mix = patient_mix.stratum_sums(patient_frame.lazy(), shares[0].lazy(), keys)
    local_frame, mix_frame = pl.collect_all([local, mix.with_columns(*named)])
    return ProfileParts(local=local_frame, codes=codes_frame, fees=fees_frame.lazy(), mix=mix_frame)


def counted_median(counted: pl.LazyFrame, by: Sequence[str], value: str, name: str) -> pl.LazyFrame:
    """Per ``by``, the median (``name``) of ``value`` over the lines ``counted`` counts: rows of
    ``by``, ``value`` and its lines ``_n``. Grouping millions of lines into counts first and
    reading the median off them took less than Polars' median of each group's lines.

    The value at a line's position in a group's sorted values is the largest value whose lines
    start at or before it; the median averages the two middle positions, as a median of the
    lines themselves would.
    """
    positioned = (
        counted.drop_nulls(value)
        .group_by(*by, value)
        .agg(pl.col("_n").sum())
        .sort(*by, value, nulls_last=True)
        .with_columns(
            (pl.col("_n").cum_sum().over(by) - pl.col("_n")).alias("_before"),
            pl.col("_n").sum().over(by).alias("_total"),
        )
    )
    v, before, total = pl.col(value), pl.col("_before"), pl.col("_total")
    return positioned.group_by(by).agg(
        ((v.filter(before <= (total - 1) // 2).max() + v.filter(before <= total // 2).max()) / 2).alias(name)
    )


def _dearer_than_usual(fees: pl.LazyFrame, medians: pl.LazyFrame) -> pl.LazyFrame:
    """Per provider, period, profession and stratum: lines on a fee above their kind's median
    (``_num_high_fee_share``) and lines whose fee and median are known (``_den_…``)."""
    high = pl.col("code_fee_eur") > pl.col("_median")
    return (
        fees.join(medians, on=list(SERVICE_KIND), how="left", nulls_equal=True)
        .group_by(ID, "period", "profession", "_stratum")
        .agg(
            pl.col("_n").filter(high).sum().alias(f"_num_{HIGH_FEE}"),
            pl.col("_n").filter(high.is_not_null()).sum().alias(f"_den_{HIGH_FEE}"),
        )
    )


def combine_profiles(parts: Sequence[ProfileParts]) -> pl.DataFrame:
    """The profiles of every provider in ``parts`` (each provider in one part only)."""
    keys = [ID, "period"]
    # The median fee of each kind of service, over every part's lines.
    medians = (
        counted_median(pl.concat([p.fees for p in parts]), SERVICE_KIND, "code_fee_eur", "_median").collect().lazy()
    )
    # One part at a time: a part's fees may be larger than memory would like all at once.
    dearer = pl.concat([_dearer_than_usual(p.fees, medians).collect() for p in parts])
    num, den = pl.col(f"_num_{HIGH_FEE}").sum(), pl.col(f"_den_{HIGH_FEE}").sum()
    high_fee = dearer.lazy().group_by(keys).agg(pl.when(den > 0).then(num / den).otherwise(0.0).alias(HIGH_FEE))
    codes = pl.concat([p.codes for p in parts]).lazy()
    profiles = (
        pl.concat([p.local for p in parts])
        .lazy()
        .join(high_fee, on=keys, how="left")
        .join(_code_mix_distance(codes), on=keys, how="left")
        .select(*keys, *PEER_ATTRIBUTES, *(pl.col(f).cast(pl.Float64) for f in FEATURES), *CHANNEL_LINES.values())
        .sort(keys)
        .collect()
    )
    mixes = [p.mix for p in parts if p.mix is not None]
    if not mixes:
        return profiles
    mix = pl.concat(mixes).join(
        dearer, on=[*keys, "profession", "_stratum"], how="left", nulls_equal=True, maintain_order="left"
    )
    return profiles.join(patient_mix.expected_values(mix, keys), on=keys, how="left", maintain_order="left")


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
    return combine_profiles([profile_parts(lines, flags, period=period, patients=patients)])

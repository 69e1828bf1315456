"""Background billing: ordinary lines and their third-party invoices, clean by construction.

"Clean" means no rule of the catalog fires on them under any legislation: submissions stay
well inside every delay, numbers are the provider's own, evening visits are typed in as
they happen, and no two lines share a duplicate key. :mod:`secm.synth.habits` then gives
some providers the habits that make rules fire (base rates), and scenarios add every
rule's boundary cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from data_contracts.schemas import THIRD_PARTY_CHANNELS
from secm.synth import anomalies, habits, population
from secm.synth.population import CHRONIC_NEED, ELDERLY_NEED, INSURERS, PatientTraits

CODE_MIX = {
    "gp": {"101076": 52, "101135": 7, "103132": 12, "103110": 3, "104215": 3, "101275": 2, "104230": 2, "104252": 1},
    "specialist": {"102020": 45, "102771": 20, "475812": 20, "355014": 15},
    "nurse": {"425014": 35, "425110": 35, "423054": 20, "425375": 10},
    "physiotherapist": {"560011": 70, "560652": 20, "560895": 10},
    "dentist": {"371011": 40, "374011": 35, "374533": 25},
    "midwife": {"422015": 60, "422531": 40},
    "other": {"801011": 100},
}
CHANNEL_MIX = {
    "gp": {"paper_cash": 10, "eattest": 45, "efact": 40, "paper_third_party": 5},
    "specialist": {"paper_cash": 10, "eattest": 25, "efact": 65},
    "nurse": {"efact": 92, "paper_third_party": 8},
    "physiotherapist": {"paper_cash": 25, "eattest": 35, "efact": 35, "paper_third_party": 5},
    "dentist": {"paper_cash": 35, "eattest": 45, "efact": 20},
    "midwife": {"eattest": 50, "efact": 50},
    "other": {"paper_cash": 50, "eattest": 30, "efact": 20},
}
OFFICE_VISIT_CODE = "101076"
ELDERLY_HOME_VISITS = 0.35  # share of an old patient's GP consultations that are home visits
NEED_DRAWS = 3
MAX_NEED = 1.0 + CHRONIC_NEED + ELDERLY_NEED
# A service up to this many days before a third-party suspension is invoiced during it.
INVOICE_LEAD_DAYS = 90
EVENING_SLOT_MINUTES = 40  # background evening home visits: one per 40-minute slot
MAX_EVENING_VISITS = 4


@dataclass(frozen=True)
class Calendar:
    """Service days and their cumulative sampling weights (weekdays, winter peak)."""

    start: date
    n_days: int
    cumulative: np.ndarray

    @classmethod
    def years(cls, first_year: int, n_years: int = 2) -> Calendar:
        start = date(first_year, 1, 1)
        n_days = (date(first_year + n_years, 1, 1) - start).days
        days = np.arange(n_days)
        weekday = np.array([(start + timedelta(days=int(d))).weekday() for d in days])
        weight = np.where(weekday == 5, 0.35, np.where(weekday == 6, 0.12, 1.0))
        weight *= 1.0 + 0.15 * np.cos(2 * np.pi * (days % 365 - 15) / 365)
        cumulative = np.cumsum(weight) / weight.sum()
        return cls(start, n_days, cumulative)

    def sample(self, rng: np.random.Generator, size: int, gap_from: np.ndarray, gap_to: np.ndarray) -> np.ndarray:
        """Day offsets, none in ``[gap_from, gap_to)`` (per line; -1 for no gap)."""
        c = np.concatenate([[0.0], self.cumulative])
        has_gap = gap_from >= 0
        lo = np.where(has_gap, c[np.clip(gap_from, 0, self.n_days)], 1.0)
        hi = np.where(has_gap, c[np.clip(gap_to, 0, self.n_days)], 1.0)
        u = rng.random(size) * (1.0 - (hi - lo))
        u = np.where(u >= lo, u + (hi - lo), u)
        return np.minimum(np.searchsorted(self.cumulative, u, side="right"), self.n_days - 1)


def _choose(rng: np.random.Generator, keys: np.ndarray, mixes: dict[str, dict[str, int]]) -> np.ndarray:
    """For each row, a value drawn from the mix named by its key."""
    out = np.empty(keys.size, dtype=object)
    for key, mix in mixes.items():
        rows = np.flatnonzero(keys == key)
        if rows.size:
            values = np.array(list(mix))
            weights = np.array(list(mix.values()), dtype=float)
            out[rows] = rng.choice(values, size=rows.size, p=weights / weights.sum())
    return out


def _insurer(patient: pl.Expr) -> pl.Expr:
    """Each patient belongs to one insurer (a stable hash of the pseudonym index), by market share."""
    bucket = (patient * 2654435761) % 1000
    bounds = np.cumsum([round(share * 1000) for share in INSURERS.values()])
    codes = list(INSURERS)
    expr = pl.when(bucket < int(bounds[0])).then(pl.lit(codes[0]))
    for code, bound in zip(codes[1:-1], bounds[1:-1], strict=True):
        expr = expr.when(bucket < int(bound)).then(pl.lit(code))
    return expr.otherwise(pl.lit(codes[-1]))


def _patients(
    rng: np.random.Generator, providers: pl.DataFrame, who: np.ndarray, traits: PatientTraits, year: int
) -> np.ndarray:
    """Each line's patient, from its provider's list: a few patients come often, and a patient
    who needs more care (:meth:`PatientTraits.need`) more often still.

    Each of ``NEED_DRAWS`` candidates is taken with a probability in proportion to its need;
    the last one when none is.
    """
    size, start, span, base = (
        providers[c].to_numpy()[who] for c in ("pool_size", "pool_start", "pool_span", "pool_base")
    )
    candidates = [
        base + (start + np.floor(size * rng.random(who.size) ** 1.6).astype(np.int64)) % span for _ in range(NEED_DRAWS)
    ]
    chosen = candidates[-1]
    for candidate in reversed(candidates[:-1]):
        taken = rng.random(who.size) * MAX_NEED < traits.need(candidate, year)
        chosen = np.where(taken, candidate, chosen)
    return chosen


def background_lines(
    rng: np.random.Generator,
    providers: pl.DataFrame,
    calendar: Calendar,
    nomenclature: pl.DataFrame,
    claim_offset: int,
    traits: PatientTraits,
) -> pl.DataFrame:
    """Ordinary lines of ``providers`` (one chunk), without invoice ids yet."""
    n = int(providers["n_lines"].sum())
    who = np.repeat(np.arange(providers.height), providers["n_lines"].to_numpy())
    p = providers.to_dict(as_series=False)
    profession = np.array(p["profession"], dtype=object)[who]
    kind = np.array(p["anomaly"], dtype=object)[who]
    intensity = np.nan_to_num(np.array(p["intensity"], dtype=float))[who]
    day = calendar.sample(rng, n, np.array(p["gap_from"])[who], np.array(p["gap_to"])[who])
    patient = _patients(rng, providers, who, traits, calendar.start.year)
    phantom = rng.random(n) < anomalies.phantom_share(kind, intensity)
    patient = np.where(phantom, 10**9 + claim_offset + np.arange(n), patient)
    atypical = np.array(p["atypical"], dtype=object)[who]
    codes = _choose(rng, profession, CODE_MIX)
    # Old patients are more often seen at home than at the practice.
    at_home = (codes == OFFICE_VISIT_CODE) & traits.elderly(patient, calendar.start.year)
    codes[at_home & (rng.random(n) < ELDERLY_HOME_VISITS)] = anomalies.HOME_VISIT_CODE
    codes = anomalies.recode(rng, codes, profession, kind, intensity, atypical)
    frame = pl.DataFrame(
        {
            "_line": np.arange(n, dtype=np.int64),
            "provider_nihdi": np.array(p["provider_nihdi"], dtype=object)[who],
            "profession": profession,
            "_patient": patient,
            "nomenclature_code": codes,
            "channel": _choose(rng, profession, CHANNEL_MIX),
            "_day": day.astype(np.int64),
            "service_date": pl.Series(day).cast(pl.Int32),
            "_minute": rng.integers(0, 600, n),
            "_jitter": rng.integers(0, 16, n),
            "_delay": np.minimum(300, np.round(rng.lognormal(np.log(12), 1.0, n))).astype(np.int64),
            "_u": rng.random(n),
            "_institution": np.array(p["institution"], dtype=object)[who],
            "software_id": np.array(p["software"], dtype=object)[who],
            "_susp_from": np.array(p["susp_from"])[who],
            "_susp_to": np.array(p["susp_to"])[who],
            "_batch_typist": np.array(p["batch_evening"], dtype=bool)[who],
        }
    ).with_columns((pl.lit(calendar.start) + pl.duration(days=pl.col("service_date"))).alias("service_date"))
    return _finish(habits.evening_rounds(frame), nomenclature, claim_offset)


def _finish(frame: pl.DataFrame, nomenclature: pl.DataFrame, claim_offset: int) -> pl.DataFrame:
    codes = nomenclature.select(
        pl.col("code").alias("nomenclature_code"), "setting", "time_window", "fee_eur", "day_equivalent_code"
    )
    weekday = pl.col("service_date").dt.weekday()
    # Weekend codes only at weekends; the weekday twin otherwise.
    frame = (
        frame.join(codes, on="nomenclature_code", how="left", maintain_order="left")
        .with_columns(
            pl.when((pl.col("time_window") == "weekend") & (weekday < 6))
            .then(pl.col("day_equivalent_code"))
            .otherwise(pl.col("nomenclature_code"))
            .alias("nomenclature_code")
        )
        .drop("setting", "time_window", "fee_eur", "day_equivalent_code")
    )
    frame = frame.join(codes, on="nomenclature_code", how="left", maintain_order="left")
    evening_home = (pl.col("time_window") == "evening") & (pl.col("setting") == "home")
    slot = evening_home.cast(pl.Int64).cum_sum().over("provider_nihdi", "service_date", order_by="_line") - 1
    frame = frame.with_columns(pl.when(evening_home).then(slot).alias("_slot"))
    # A fifth evening home visit in one evening would not fit: it becomes a day visit.
    crowded = pl.col("_slot") >= MAX_EVENING_VISITS
    frame = (
        frame.with_columns(
            pl.when(crowded)
            .then(pl.col("day_equivalent_code"))
            .otherwise(pl.col("nomenclature_code"))
            .alias("nomenclature_code"),
            pl.when(crowded).then(None).otherwise(pl.col("_slot")).alias("_slot"),
        )
        .drop("setting", "time_window", "fee_eur", "day_equivalent_code")
        .join(codes, on="nomenclature_code", how="left", maintain_order="left")
    )

    minute = (
        pl.when(pl.col("_slot").is_not_null())
        .then(18 * 60 + EVENING_SLOT_MINUTES * pl.col("_slot") + pl.col("_jitter"))
        .when(pl.col("time_window") == "evening")
        .then(18 * 60 + pl.col("_minute") % 170)
        .when(pl.col("time_window") == "night")
        .then((21 * 60 + pl.col("_minute") % 660) % 1440)
        .when(pl.col("time_window") == "weekend")
        .then(9 * 60 + pl.col("_minute") % 480)
        .otherwise(8 * 60 + pl.col("_minute"))
    )
    third_party = pl.col("channel").is_in(THIRD_PARTY_CHANNELS)
    suspended = (
        third_party
        & (pl.col("_day") >= pl.col("_susp_from") - INVOICE_LEAD_DAYS)
        & (pl.col("_day") <= pl.col("_susp_to"))
    )
    paper = pl.col("channel").str.starts_with("paper")
    frame = frame.with_columns(minute.alias("_minute")).with_columns(
        # A suspended provider bills its patients directly while an invoice would fall in the suspension.
        pl.when(suspended).then(pl.lit("eattest")).otherwise(pl.col("channel")).alias("channel")
    )
    service_dt = pl.col("service_date").cast(pl.Datetime("us")) + pl.duration(minutes=pl.col("_minute"))
    encoded_after = (
        pl.when(pl.col("_slot").is_not_null())
        .then(pl.duration(minutes=5 + pl.col("_jitter") % 10))
        .when(pl.col("channel") == "eattest")
        .then(pl.duration(minutes=2 + pl.col("_jitter")))
        .when(pl.col("channel") == "efact")
        .then(pl.duration(minutes=30 + 20 * pl.col("_jitter")))
        .otherwise(pl.duration(hours=1 + 3 * pl.col("_jitter")))
    )
    preferential = population.preferential(pl.col("_patient"))
    hospital = pl.col("setting") == "hospital"
    return frame.with_columns(
        pl.format("C{}", (pl.col("_line") + claim_offset).cast(pl.String).str.zfill(11)).alias("claim_id"),
        population.patient_pseudonym(pl.col("_patient")).alias("patient_id"),
        _insurer(pl.col("_patient")).alias("insurer_code"),
        pl.when(paper & (pl.col("_u") < 0.3))
        .then(None)
        .otherwise(pl.time(pl.col("_minute") // 60, pl.col("_minute") % 60))
        .alias("service_time"),
        pl.when(paper & (pl.col("_slot").is_null()) & (pl.col("_u") < 0.5))
        .then(None)
        .otherwise(service_dt + encoded_after)
        .alias("encoded_at"),
        pl.when(pl.col("channel") == "paper_cash")
        .then(pl.col("service_date") + pl.duration(days=pl.col("_delay")))
        .when(pl.col("channel") == "eattest")
        .then(pl.col("service_date") + pl.duration(days=pl.col("_jitter") % 2))
        .alias("submitted_date"),
        pl.col("fee_eur").alias("amount_fee"),
        (pl.col("fee_eur") * pl.when(preferential).then(0.9).otherwise(0.75)).round(2).alias("amount_reimbursed"),
        pl.when(hospital)
        .then(pl.lit("hospital"))
        .when(pl.col("setting") == "home")
        .then(pl.lit("home"))
        .otherwise(pl.lit("office"))
        .alias("place_of_service"),
        pl.when(hospital).then(pl.col("_institution")).alias("institution_nihdi"),
        pl.when(pl.col("_u") < 0.2).then(None).otherwise(pl.lit(1)).alias("quantity"),
    )


def dedupe_keys(lines: pl.DataFrame) -> pl.DataFrame:
    """Give a fresh pseudonym to a line that would repeat another's duplicate key."""
    key = pl.struct("patient_id", "provider_nihdi", "nomenclature_code", "service_date", "service_time")
    repeat = ~key.is_first_distinct()
    return lines.with_columns(
        pl.when(repeat)
        .then(pl.format("{}-{}", "patient_id", "claim_id"))
        .otherwise(pl.col("patient_id"))
        .alias("patient_id")
    )


def invoices_for(
    lines: pl.DataFrame, providers: pl.DataFrame, rng: np.random.Generator, invoice_offset: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group third-party lines per provider, insurer, channel and month into invoices."""
    tp = lines.filter(pl.col("channel").is_in(THIRD_PARTY_CHANNELS))
    groups = (
        tp.group_by(
            "provider_nihdi", "insurer_code", "channel", pl.col("service_date").dt.month_end().alias("_month_end")
        )
        .agg(pl.len().alias("line_count"), pl.col("amount_reimbursed").sum().round(2).alias("amount_claimed"))
        .sort("provider_nihdi", "_month_end", "insurer_code", "channel")
    )
    n = groups.height
    delay = np.where(groups["channel"].to_numpy() == "efact", rng.integers(3, 26, n), rng.integers(10, 51, n))
    groups = groups.with_columns(
        pl.format("I{}", (pl.int_range(n) + invoice_offset).cast(pl.String).str.zfill(10)).alias("invoice_id"),
        (pl.col("_month_end") + pl.duration(days=pl.Series(delay))).alias("submitted_date"),
    ).join(providers.select("provider_nihdi", pl.col("tp_number").alias("third_party_number")), on="provider_nihdi")
    lines = lines.join(
        groups.select("provider_nihdi", "insurer_code", "channel", "_month_end", "invoice_id"),
        left_on=["provider_nihdi", "insurer_code", "channel", pl.col("service_date").dt.month_end()],
        right_on=["provider_nihdi", "insurer_code", "channel", "_month_end"],
        how="left",
        maintain_order="left",
    )
    invoices = groups.select(
        "invoice_id", "third_party_number", "insurer_code", "submitted_date", "amount_claimed", "line_count"
    )
    return lines, invoices

"""Background base rates: the billing habits that make rules fire on ordinary providers.

Real billing is not clean: some home nurses send their eFact invoices late month after
month, some practices still put the abolished pseudo number on invoices to the insurers that
long tolerated it, some file paper attestations a year or more after the service, and a few
GPs bill the evening supplement for late-afternoon consultations or type their evening
rounds in one go with a package that stamps each visit with the moment it is typed.

Each habit is placed well inside or well outside the legal limit (never on a boundary: the
scenarios test those), so every line it makes late or wrong is known, and labelled, by
construction. One package, :data:`STAMPING_SOFTWARE`, stamps evening visits typed during the
evening with the typing time: the per-package statistics of a run should single it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from secm.synth.population import PSEUDO_NUMBER

# habit -> (professions that have it, share of their providers)
HABITS: dict[str, tuple[tuple[str, ...], float]] = {
    "late_efact": (("nurse",), 0.10),
    "late_paper_third_party": (("nurse", "gp", "physiotherapist"), 0.03),
    "pseudo_number": (("gp", "physiotherapist", "nurse", "specialist"), 0.04),
    "late_paper_cash": (("physiotherapist", "dentist", "other", "gp"), 0.03),
    "early_evening": (("gp",), 0.03),
    "batch_evening": (("gp",), 0.03),
}
LATE_INVOICE_SHARE = 0.2  # of a late biller's invoices
# Insurers that long accepted the pseudo number, and the share of a habit's invoices to them.
PSEUDO_INSURERS = ("200", "900")
PSEUDO_INVOICE_SHARE = 0.5
LATE_CASH_SHARE = 0.15  # of a late paper biller's paper attestations
EARLY_EVENING_SHARE = 0.5  # of a habit's evening office consultations
STAMPING_SOFTWARE = "praxis-one"
EVENING_HOME_CODE, DAY_HOME_CODE = "104215", "103132"  # a GP's home visit, evening and day
ROUND_DAYS_SHARE = 0.3  # of a batch typist's days with three or more home visits
BATCH_TYPED_FROM = 20 * 60 + 40  # minute of the day a batch typist starts typing the round
BATCH_TYPING_MINUTES = 3  # minutes per visit typed
LABEL_SCHEMA = {"claim_id": pl.String, "rule_id": pl.String, "reason": pl.String, "legislation": pl.String}
BOTH = ("current", "reform_art174")


def assign(rng: np.random.Generator, providers: pl.DataFrame, exclude: frozenset[str]) -> pl.DataFrame:
    """``providers`` with one boolean column per habit; providers in ``exclude`` have none.

    Each habit goes to its share of the eligible providers, at least one, so that every
    dataset shows every habit. The batch typists are chosen among users of
    :data:`STAMPING_SOFTWARE`, whose stamp hides when the visit took place.
    """
    columns = {}
    for name, (professions, share) in HABITS.items():
        eligible = ~pl.col("provider_nihdi").is_in(list(exclude)) & pl.col("profession").is_in(professions)
        if name == "batch_evening":
            eligible &= pl.col("software") == STAMPING_SOFTWARE
        rows = providers.select(eligible.arg_true()).to_series().to_numpy()
        chosen = rng.choice(rows, size=min(rows.size, max(1, round(share * rows.size))), replace=False)
        columns[name] = np.isin(np.arange(providers.height), chosen)
    return providers.with_columns(pl.DataFrame(columns))


def evening_rounds(lines: pl.DataFrame) -> pl.DataFrame:
    """A batch typist bills, on some days, the day's home visits as an evening round: typed
    together in the evening, they get the evening code the stamp seems to justify.

    Reads ``_batch_typist`` (the provider's habit) and ``_day``; runs before the evening
    slots are laid out, so that a round holds at most the visits an evening can.
    """
    home = pl.col("nomenclature_code") == DAY_HOME_CODE
    visits = home.sum().over("provider_nihdi", "_day")
    chosen_day = (pl.col("_day") * 7919 + pl.col("provider_nihdi").hash(7) % 1000) % 1000 < ROUND_DAYS_SHARE * 1000
    round_ = pl.col("_batch_typist") & home & (visits >= 3) & chosen_day
    return lines.with_columns(
        pl.when(round_)
        .then(pl.lit(EVENING_HOME_CODE))
        .otherwise(pl.col("nomenclature_code"))
        .alias("nomenclature_code")
    ).drop("_batch_typist")


def _minute_of(moment: pl.Expr) -> pl.Expr:
    return moment.dt.hour().cast(pl.Int64) * 60 + moment.dt.minute().cast(pl.Int64)


def _at_minute(day: pl.Expr, minute: pl.Expr) -> pl.Expr:
    return day.cast(pl.Datetime("us")) + pl.duration(minutes=minute)


def _labels(
    lines: pl.DataFrame, mask: pl.Expr, rule_id: str, reason: str, legislations: tuple[str, ...]
) -> pl.DataFrame:
    claims = lines.filter(mask).select("claim_id")
    return pl.concat(
        [
            claims.with_columns(
                pl.lit(rule_id).alias("rule_id"),
                pl.lit(reason).alias("reason"),
                pl.lit(legislation).alias("legislation"),
            )
            for legislation in legislations
        ]
    ).cast(LABEL_SCHEMA)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Habitual:
    """A chunk's invoices after the invoice habits, and the flags those imply."""

    invoices: pl.DataFrame
    flags: pl.DataFrame


def on_lines(rng: np.random.Generator, lines: pl.DataFrame, providers: pl.DataFrame) -> pl.DataFrame:
    """Line habits: stamped evening times, early evening supplements, late paper attestations,
    batch-typed evening rounds. Reads the background's evening slots (``_slot``); marks the
    lines it changed (``_batch``, ``_early``, ``_late_cash``) for :func:`line_flags`."""
    habit = providers.select("provider_nihdi", "early_evening", "batch_evening", "late_paper_cash")
    lines = lines.join(habit, on="provider_nihdi", how="left", maintain_order="left").with_columns(
        pl.Series("_h", rng.random(lines.height))
    )
    evening = pl.col("time_window") == "evening"
    typed_minute = _minute_of(pl.col("encoded_at"))
    typed_in_window = (pl.col("encoded_at").dt.date() == pl.col("service_date")) & typed_minute.is_between(
        18 * 60, 21 * 60, closed="left"
    )
    stamped = evening & (pl.col("software_id") == STAMPING_SOFTWARE) & typed_in_window
    early = (
        pl.col("early_evening")
        & evening
        & pl.col("_slot").is_null()
        & pl.col("service_time").is_not_null()
        & (pl.col("_h") < EARLY_EVENING_SHARE)
    )
    late_cash = (
        pl.col("late_paper_cash")
        & (pl.col("channel") == "paper_cash")
        & pl.col("institution_nihdi").is_null()
        & (pl.col("_h") < LATE_CASH_SHARE)
    )
    # A batch typist types the whole evening round from 20:40, three minutes a visit; the
    # package stamps each visit with that moment.
    batch_at = _at_minute(pl.col("service_date"), BATCH_TYPED_FROM + BATCH_TYPING_MINUTES * pl.col("_slot"))
    batch = pl.col("batch_evening") & pl.col("_slot").is_not_null()
    return lines.with_columns(
        pl.when(batch).then(batch_at).otherwise(pl.col("encoded_at")).alias("encoded_at"),
        pl.when(batch)
        .then(batch_at.dt.time())
        .when(early)
        .then(pl.time(17, pl.col("_h").mul(59 / EARLY_EVENING_SHARE).cast(pl.Int64)))
        .when(stamped)
        .then(pl.col("encoded_at").dt.truncate("1m").dt.time())
        .otherwise(pl.col("service_time"))
        .alias("service_time"),
        pl.when(late_cash)
        .then(pl.col("service_date") + pl.duration(days=400 + (pl.col("_h") * 2000).cast(pl.Int64) % 300))
        .otherwise(pl.col("submitted_date"))
        .alias("submitted_date"),
        batch.alias("_batch"),
        early.alias("_early"),
        late_cash.alias("_late_cash"),
    ).drop("early_evening", "batch_evening", "late_paper_cash", "_h")


def line_flags(lines: pl.DataFrame) -> pl.DataFrame:
    """The flags :func:`on_lines` made: a round of three or more batch-typed evening visits is
    flagged whole (the stamps are three minutes apart); an evening supplement at five is
    outside its window; a paper attestation 400 to 699 days late is late only under the reform."""
    round_size = pl.col("_batch").sum().over("provider_nihdi", "service_date")
    return pl.concat(
        [
            _labels(lines, pl.col("_batch") & (round_size >= 3), "EVENING_VISIT_MISCODING", "batch_encoding", BOTH),
            _labels(lines, pl.col("_early"), "EVENING_VISIT_MISCODING", "time_outside_window", BOTH),
            _labels(lines, pl.col("_late_cash"), "LATE_ATTESTATION", "late_attestation", ("reform_art174",)),
        ]
    )


def on_invoices(
    rng: np.random.Generator, lines: pl.DataFrame, invoices: pl.DataFrame, providers: pl.DataFrame
) -> Habitual:
    """Invoice habits: late eFact (home nurses) and paper third-party invoices, the pseudo
    number on invoices to :data:`PSEUDO_INSURERS`; with the flags they imply."""
    owner = (
        lines.filter(pl.col("invoice_id").is_not_null())
        .group_by("invoice_id")
        .agg(
            pl.col("provider_nihdi").first(),
            pl.col("channel").first(),
            pl.col("service_date").first().dt.month_end().alias("_month_end"),
        )
        .join(
            providers.select("provider_nihdi", "late_efact", "late_paper_third_party", "pseudo_number"),
            on="provider_nihdi",
        )
    )
    columns = invoices.columns
    invoices = invoices.join(owner, on="invoice_id", how="left", maintain_order="left").with_columns(
        pl.Series("_h", rng.random(invoices.height))
    )
    late_efact = pl.col("late_efact") & (pl.col("channel") == "efact") & (pl.col("_h") < LATE_INVOICE_SHARE)
    late_paper = (
        pl.col("late_paper_third_party")
        & (pl.col("channel") == "paper_third_party")
        & (pl.col("_h") < LATE_INVOICE_SHARE)
    )
    pseudo = (
        pl.col("pseudo_number")
        & pl.col("insurer_code").is_in(PSEUDO_INSURERS)
        & (pl.col("_h") >= 1 - PSEUDO_INVOICE_SHARE)
    )
    # Deadlines: the end of the next month (nurses' eFact), of the second next (paper).
    lag = (pl.col("_h") * 1000).cast(pl.Int64)
    invoices = invoices.with_columns(
        pl.when(late_efact)
        .then(pl.col("_month_end") + pl.duration(days=35 + lag % 35))
        .when(late_paper)
        .then(pl.col("_month_end") + pl.duration(days=70 + lag % 50))
        .otherwise(pl.col("submitted_date"))
        .alias("submitted_date"),
        pl.when(pseudo).then(pl.lit(PSEUDO_NUMBER)).otherwise(pl.col("third_party_number")).alias("third_party_number"),
        late_efact.alias("_late_efact"),
        late_paper.alias("_late_paper"),
        pseudo.alias("_pseudo"),
    )
    marks = invoices.select("invoice_id", "_late_efact", "_late_paper", "_pseudo")
    marked = lines.join(marks, on="invoice_id", how="left", maintain_order="left")
    # An institution's line keeps its two-year (one-year) limit: 120 days is well inside it.
    own = pl.col("institution_nihdi").is_null()
    late_nurse = pl.col("_late_efact").fill_null(False) & own & (pl.col("profession") == "nurse")
    flags = pl.concat(
        [
            _labels(marked, late_nurse, "LATE_ATTESTATION", "late_efact_nurse", BOTH),
            _labels(
                marked, pl.col("_late_paper").fill_null(False) & own, "LATE_ATTESTATION", "late_paper_third_party", BOTH
            ),
            _labels(marked, pl.col("_pseudo").fill_null(False), "PSEUDO_TP_NUMBER", "unregistered", BOTH),
        ]
    )
    return Habitual(invoices.select(columns), flags)

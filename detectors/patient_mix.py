"""What each profile indicator would be for a provider's own patient mix.

A practice of old, chronically ill patients sees each of them more often, and more often at
home, than a practice of young healthy ones: comparing the two raw is comparing patient
lists, not billing. Given the ``patients`` table, each indicator gets an expected value by
indirect standardisation, as epidemiologists compare mortality between hospitals:

- patients fall into strata (age band in the period, chronic condition, preferential
  reimbursement; unknown values are a stratum of their own);
- per profession, period and stratum, the indicator's rate over every provider's patients
  (lines per patient, share of home visits among their lines…), shrunk towards the
  profession's rate by ``PRIOR`` patients or lines so that a thin stratum says little;
- a provider's expected value is its own patients' stratum rates, weighted as the indicator
  weighs them (per patient, per line, per returning patient).

A patient missing from the table (the table may be partial) counts at the profession's rate.
Every indicator the detector scores is one ratio ``sum(numerator) / sum(denominator)`` over
the provider's patients (:func:`stratum_sums`), which is what makes this exact.
"""

from __future__ import annotations

import polars as pl

PRIOR = 50  # patients or lines: how much a stratum needs before its own rate outweighs the profession's
AGE_BANDS = (18, 65, 80)  # bands 0-17, 18-64, 65-79, 80 and over


def _per_patient_ratios() -> dict[str, tuple[pl.Expr, pl.Expr]]:
    """Per indicator counted per patient, its numerator and denominator for one patient of a
    provider, from the patient's lines (``_n``) and amount (``_amount``)."""
    n = pl.col("_n")
    return {
        "lines_per_patient": (n, pl.lit(1)),
        "amount_per_patient": (pl.col("_amount"), pl.lit(1)),
        "share_patients_seen_once": ((n == 1).cast(pl.Int64), pl.lit(1)),
        "repeat_intensity": (pl.when(n > 1).then(n).otherwise(0), (n > 1).cast(pl.Int64)),
    }


def _stratum(year: pl.Expr) -> pl.Expr:
    """A patient's stratum in a period of ``year``: age band, chronic condition, preferential
    status, as one small number (a key only, never shown: a number is grouped and joined on
    faster than a label, on every patient of every provider)."""
    age = year.cast(pl.Int64) - pl.col("birth_year")
    band = pl.lit(0, pl.UInt8)  # unknown
    for number, low in enumerate((0, *AGE_BANDS), start=1):
        band = pl.when(age >= low).then(pl.lit(number, pl.UInt8)).otherwise(band)

    def flag(column: str) -> pl.Expr:  # 0 unknown, 1 no, 2 yes
        return pl.col(column).cast(pl.UInt8).add(1).fill_null(0)

    return band * 9 + flag("chronic_condition") * 3 + flag("preferential_reimbursement")


def with_stratum(frame: pl.LazyFrame, patients: pl.LazyFrame, year: pl.Expr) -> pl.LazyFrame:
    """``frame`` (with ``patient_id``, and its period's ``year`` read from its columns) and each
    patient's ``_stratum`` in the period (null for a patient the table does not know)."""
    known = patients.select(
        "patient_id", "birth_year", "chronic_condition", "preferential_reimbursement", pl.lit(True).alias("_known")
    )
    return (
        frame.join(known, on="patient_id", how="left")
        .with_columns(pl.when(pl.col("_known")).then(_stratum(year)).alias("_stratum"))
        .drop("birth_year", "chronic_condition", "preferential_reimbursement", "_known")
    )


def stratum_sums(per_patient: pl.LazyFrame, line_sums: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """Per ``keys`` (provider and period), profession and patient stratum: the numerator and
    denominator of every indicator, summed over the patients (a provider's expected value
    weighs stratum rates by these sums).

    ``per_patient`` has a row per ``keys``, ``profession`` and ``patient_id`` with the
    patient's ``_stratum`` (:func:`with_stratum`), lines ``_n`` and amount ``_amount``, which
    the indicators of :func:`_per_patient_ratios` read; ``line_sums``, per ``keys``,
    ``profession`` and ``_stratum``, each share of lines' numerator and denominator
    (``_num_<share>``, ``_den_<share>``) summed over the lines, which is their sum over the
    patients."""
    ratios = _per_patient_ratios()
    group = [*keys, "profession", "_stratum"]
    terms = per_patient.select(
        *group,
        *(e.alias(f"_num_{f}") for f, (e, _) in ratios.items()),
        *(d.alias(f"_den_{f}") for f, (_, d) in ratios.items()),
    )
    sums = [pl.col(f"_{part}_{f}").sum() for f in ratios for part in ("num", "den")]
    return terms.group_by(group).agg(sums).join(line_sums, on=group, how="left", nulls_equal=True)


def expected_values(sums: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per ``keys``, ``expected_<indicator>`` from the table :func:`stratum_sums` gives."""
    indicators = [c.removeprefix("_num_") for c in sums.columns if c.startswith("_num_")]
    totals = [pl.col(f"_{part}_{f}").sum() for f in indicators for part in ("num", "den")]
    groups = sums.lazy()
    profession = (
        groups.group_by("profession", "period")
        .agg(totals)
        .select(
            "profession",
            "period",
            *((pl.col(f"_num_{f}") / pl.col(f"_den_{f}")).alias(f"_all_{f}") for f in indicators),
        )
    )
    strata = (
        groups.filter(pl.col("_stratum").is_not_null())
        .group_by("profession", "period", "_stratum")
        .agg(totals)
        .join(profession, on=["profession", "period"])
        .select(
            "profession",
            "period",
            "_stratum",
            *(
                ((pl.col(f"_num_{f}") + PRIOR * pl.col(f"_all_{f}")) / (pl.col(f"_den_{f}") + PRIOR)).alias(
                    f"_rate_{f}"
                )
                for f in indicators
            ),
        )
    )
    rate = {f: pl.coalesce(f"_rate_{f}", f"_all_{f}") for f in indicators}
    return (
        groups.join(profession, on=["profession", "period"], how="left")
        .join(strata, on=["profession", "period", "_stratum"], how="left")
        .group_by(keys)
        .agg(
            ((pl.col(f"_den_{f}") * rate[f]).sum() / pl.col(f"_den_{f}").sum()).alias(f"expected_{f}")
            for f in indicators
        )
        .collect()
    )


def observed_to_expected(profiles: pl.DataFrame, offset: float = 1e-3) -> pl.DataFrame:
    """``profiles`` with each feature that has an ``expected_`` column replaced by its
    observed/expected ratio, for detectors that read features as they are."""
    return profiles.with_columns(
        ((pl.col(c.removeprefix("expected_")) + offset) / (pl.col(c) + offset)).alias(c.removeprefix("expected_"))
        for c in profiles.columns
        if c.startswith("expected_")
    )

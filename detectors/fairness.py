"""Are scores and flags spread evenly over regions, languages, insurers and practice sizes?

A worklist that sends inspectors to one region, one language community or the clients of
one insurer more than the others must be able to say why. For every group of each
dimension this compares, per provider profile (provider × period):

- ``top_decile_share``: the share of profiles in their period's top decile of scores;
- ``flagged_share``: the share of profiles with at least one line flagged by a rule;
- ``mean_score_percentile``: where the group's scores sit in their period (0.5 is even);
- ``score_superiority``: the chance that a profile of the group scores above one of the
  others, each against their own period (0.5 is even; the Mann-Whitney U, scaled).

A disparity is *large* when a group of at least ``min_group`` profiles has a rate at least
``LARGE_RATIO`` times that of the other profiles (or at most its inverse), or a superiority
beyond ``LARGE_SUPERIORITY`` (or below its complement), and a test (Fisher's exact for a
rate, Mann-Whitney's for the scores) finds the difference beyond chance at 1 % after a
Bonferroni correction for every group and measure tested. A large disparity is not proof of bias (fraud may well be uneven), but it
is what a model card and a run must state, so that someone looks at it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from detectors.profiles import ID, Period, period_name, with_period

DIMENSIONS = ("region", "language", "insurer", "practice_size")
RATES = ("top_decile_share", "flagged_share")
MEASURES = (*RATES, "score_superiority")
MIN_GROUP = 20
LARGE_RATIO = 1.5
LARGE_SUPERIORITY = 0.64  # a "medium" effect: Cohen's d of 0.5 between two normal groups
ALPHA = 0.01
# The German-speaking Community's postcodes (Eupen, Sankt Vith and their municipalities).
GERMAN_POSTCODES = (4700, 4799)


def provider_attributes(
    lines: pl.LazyFrame | pl.DataFrame, providers: pl.LazyFrame | pl.DataFrame | None, period: Period = "year"
) -> pl.DataFrame:
    """Per provider and period: the insurer of most of their lines (ties: the lowest code)
    and the provider's postcode (null without the providers table)."""
    # Lines grouped by the period's number, named once per provider: naming every line's
    # period wrote millions of strings, half the cost of the grouping.
    insurer = (
        with_period(lines.lazy(), period)
        .group_by(ID, "period", "insurer_code")
        .agg(pl.len().alias("_n"))
        .sort(ID, "period", "_n", "insurer_code", descending=[False, False, True, False])
        .group_by(ID, "period", maintain_order=True)
        .agg(pl.col("insurer_code").first().alias("insurer"))
        .with_columns(period_name(period, pl.col("period")))
    )
    if providers is None:
        return insurer.with_columns(pl.lit(None, pl.String).alias("postcode")).collect()
    postcodes = providers.lazy().select(ID, "postcode").unique(ID, keep="first")
    return insurer.join(postcodes, on=ID, how="left").collect()


def _language() -> pl.Expr:
    """The language community a practice serves, from its region and postcode: Flanders Dutch,
    Wallonia French (German in the German-speaking Community), Brussels bilingual."""
    postcode = pl.col("postcode").cast(pl.Int64, strict=False)
    low, high = GERMAN_POSTCODES
    return (
        pl.when(pl.col("region") == "VLA")
        .then(pl.lit("nl"))
        .when((pl.col("region") == "WAL") & postcode.is_between(low, high))
        .then(pl.lit("de"))
        .when(pl.col("region") == "WAL")
        .then(pl.lit("fr"))
        .when(pl.col("region") == "BRU")
        .then(pl.lit("fr-nl"))
        .alias("language")
    )


def _practice_size() -> pl.Expr:
    """Small (bottom quarter of patients in the profession and period), large (top quarter), medium."""
    within = ("profession", "period")
    patients = pl.col("patients")
    return (
        pl.when(patients < patients.quantile(0.25).over(within))
        .then(pl.lit("small"))
        .when(patients > patients.quantile(0.75).over(within))
        .then(pl.lit("large"))
        .otherwise(pl.lit("medium"))
        .alias("practice_size")
    )


def _per_profile(scores: pl.DataFrame, profiles: pl.DataFrame, attributes: pl.DataFrame | None) -> pl.DataFrame:
    """One row per scored profile: its groups and what is compared."""
    keys = [ID, "period"]
    percentile = (pl.col("score").rank("average").over("period") / pl.len().over("period")).alias("score_percentile")
    frame = scores.select(*keys, "score").join(
        profiles.select(*keys, "profession", "region", "patients", "rule_hit_rate"), on=keys, how="left"
    )
    if attributes is not None:
        frame = frame.join(attributes.select(*keys, "insurer", "postcode"), on=keys, how="left")
    else:
        frame = frame.with_columns(pl.lit(None, pl.String).alias("insurer"), pl.lit(None, pl.String).alias("postcode"))
    return frame.with_columns(
        percentile,
        _language(),
        _practice_size(),
        (pl.col("rule_hit_rate").fill_null(0.0) > 0).alias("flagged"),
    ).with_columns((pl.col("score_percentile") > 0.9).alias("top_decile"))


def _disparity(
    row: dict[str, Any], measure: str, value: float, others: float, effect: float | None, p: float
) -> dict[str, Any]:
    return {
        "dimension": row["dimension"],
        "group": row["group"],
        "measure": measure,
        "value": round(value, 3),
        "others": round(others, 3),
        "ratio": None if effect is None else round(effect, 2),
        "profiles": row["profiles"],
        "p_value": float(f"{p:.3g}"),
    }


def fairness_report(
    scores: pl.DataFrame,
    profiles: pl.DataFrame,
    attributes: pl.DataFrame | None = None,
    *,
    min_group: int = MIN_GROUP,
) -> dict[str, Any]:
    """Measures per group of each dimension, and the large disparities among them.

    ``scores`` has ``provider_nihdi``, ``period`` and ``score``; ``profiles`` the profile
    columns (``profession``, ``region``, ``patients``, ``rule_hit_rate``); ``attributes``
    (:func:`provider_attributes`) adds the insurer and the postcode.
    """
    from scipy.stats import fisher_exact, mannwhitneyu  # type: ignore[import-untyped]

    frame = _per_profile(scores, profiles, attributes)
    n = frame.height
    totals = {rate: int(frame[rate.removesuffix("_share")].sum()) for rate in RATES}
    tables = []
    for dimension in DIMENSIONS:
        tables.append(
            frame.drop_nulls(dimension)
            .group_by(pl.col(dimension).cast(pl.String).alias("group"))
            .agg(
                pl.len().alias("profiles"),
                *(pl.col(rate.removesuffix("_share")).sum().alias(f"_{rate}") for rate in RATES),
                pl.col("score_percentile").mean().round(3).alias("mean_score_percentile"),
            )
            .with_columns(pl.lit(dimension).alias("dimension"))
        )
    groups = pl.concat(tables).sort("dimension", "group")
    testable = groups.filter(pl.col("profiles") >= min_group, pl.col("profiles") < n)
    threshold = ALPHA / max(1, testable.height * len(MEASURES))
    disparities: list[dict[str, Any]] = []
    superiority: list[tuple[str, str, float]] = []
    for row in testable.iter_rows(named=True):
        size, rest = row["profiles"], n - row["profiles"]
        for rate in RATES:
            inside = row[f"_{rate}"]
            outside = totals[rate] - inside
            value, others = inside / size, outside / rest
            ratio = value / others if others else (float("inf") if value else 1.0)
            if 1 / LARGE_RATIO < ratio < LARGE_RATIO:
                continue
            p = float(fisher_exact([[inside, size - inside], [outside, rest - outside]])[1])
            if p < threshold:
                disparities.append(_disparity(row, rate, value, others, None if ratio == float("inf") else ratio, p))
        member = pl.col(row["dimension"]).cast(pl.String) == row["group"]
        mine = frame.filter(member)["score_percentile"].to_numpy()
        theirs = frame.filter(~member.fill_null(False))["score_percentile"].to_numpy()
        test = mannwhitneyu(mine, theirs, alternative="two-sided")
        chance = float(test.statistic) / (mine.size * theirs.size)
        superiority.append((row["dimension"], row["group"], round(chance, 3)))
        if not 1 - LARGE_SUPERIORITY < chance < LARGE_SUPERIORITY and float(test.pvalue) < threshold:
            disparities.append(_disparity(row, "score_superiority", chance, 1 - chance, None, float(test.pvalue)))
    tested = pl.DataFrame(
        superiority, schema={"dimension": pl.String, "group": pl.String, "score_superiority": pl.Float64}, orient="row"
    )
    table = (
        groups.with_columns(*((pl.col(f"_{rate}") / pl.col("profiles")).round(3).alias(rate) for rate in RATES)).join(
            tested, on=["dimension", "group"], how="left", maintain_order="left"
        )
    ).select("dimension", "group", "profiles", *RATES, "mean_score_percentile", "score_superiority")
    return {
        "profiles": n,
        "overall": {rate: round(totals[rate] / n, 3) if n else None for rate in RATES},
        "min_group": min_group,
        "groups": table.to_dicts(),
        "disparities": sorted(disparities, key=lambda d: d["p_value"]),
    }

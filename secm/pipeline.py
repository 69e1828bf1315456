"""A batch run: load and validate a dataset, flag lines, write the contract's outputs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from data_contracts import TableStats, load_dataset
from data_contracts.parsers import INSURER_PATTERN, INVALID_INSURER
from detectors.fairness import fairness_report, provider_attributes
from detectors.profiles import Period, provider_profiles
from detectors.scoring import fit_profiles, score_profiles
from detectors.tracking import load_champion
from rules import enriched_lines, evaluate, load_catalog, summarise
from rules.context import STAMPED_SHARE, stamped


@dataclass(frozen=True)
class RunResult:
    out: Path
    info: dict[str, Any]
    flags: pl.DataFrame


def run(
    data: Path,
    out: Path,
    *,
    legislation: str = "current",
    effective_from: date | None = None,
    catalog_path: Path | None = None,
    period: Period = "year",
    on_step: Callable[[str], None] | None = None,
    on_table: Callable[[str, TableStats], None] | None = None,
    publish_to: str | None = None,
) -> RunResult:
    """Write ``flags.parquet``, ``quarantine.parquet``, ``profiles.parquet``,
    ``provider_scores.parquet`` and ``run.json`` under ``out``; then, when ``publish_to``
    names a database, publish the run there for the HTTP service."""
    catalog = load_catalog(catalog_path)
    effective_from = catalog.effective_from(legislation, effective_from)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 3)

    if on_step:
        on_step("Loading and validating")
    dataset = load_dataset(data, on_table=on_table)
    step("load_validate_seconds")
    if on_step:
        on_step("Evaluating rules")
    tables = dataset.lazy_tables()
    lines = enriched_lines(tables)
    flags = evaluate(tables, legislation=legislation, catalog=catalog, lines=lines, effective_from=effective_from)
    step("rules_seconds")
    if on_step:
        on_step("Scoring provider profiles")
    profiles = provider_profiles(lines, flags, period=period, patients=tables.get("patients"))
    scores, detector = _score(profiles)
    fairness = fairness_report(scores, profiles, provider_attributes(lines, tables.get("providers"), period))
    step("scoring_seconds")

    out.mkdir(parents=True, exist_ok=True)
    flags.write_parquet(out / "flags.parquet")
    dataset.quarantine.write_parquet(out / "quarantine.parquet")
    profiles.write_parquet(out / "profiles.parquet")
    scores.write_parquet(out / "provider_scores.parquet")
    step("write_seconds")
    timings["total_seconds"] = round(time.perf_counter() - started, 3)
    info = {
        "run_id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": str(Path(data).resolve()),
        "outputs": str(out.resolve()),
        "legislation": legislation,
        "catalog_version": catalog.version,
        "effective_from": effective_from.isoformat() if effective_from else None,
        "tables": {name: stats.as_dict() for name, stats in dataset.stats.items()},
        "quarantine_reasons": _reason_counts(dataset.quarantine),
        "rules": summarise(flags, catalog),
        "billed_amount_eur": round(float(dataset.tables["billing_lines"]["amount_reimbursed"].sum()), 2),
        "volumes": volumes(dataset.tables["billing_lines"]),
        "software": software_statistics(lines, flags),
        "quarantine_by_insurer": quarantine_by_insurer(dataset.quarantine),
        "quarantine_by_year": quarantine_by_year(dataset.quarantine),
        "detector": {**detector, "period": period, "profiles_scored": scores.height},
        "fairness": fairness,
        "timings": timings,
    }
    (out / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    if publish_to:
        if on_step:
            on_step("Publishing to the application database")
        from api.publish import publish

        publish(
            publish_to,
            info,
            flags=flags,
            scores=scores,
            profiles=profiles,
            quarantine=dataset.quarantine,
            references=dataset.tables,
        )
        timings["publish_seconds"] = round(time.perf_counter() - started - timings["total_seconds"], 3)
    return RunResult(out=out, info=info, flags=flags)


def _score(profiles: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str | None]]:
    """Scores by the registered champion, or by the default detector fitted on these profiles."""
    champion = load_champion()
    if champion is None:
        model = fit_profiles(profiles)
        source = "fitted on this run's profiles, unsupervised: no champion is registered (see secm train)"
        return score_profiles(model, profiles), {"model": model.name, "version": None, "source": source}
    model, version = champion
    source = f"registered champion, version {version}"
    return score_profiles(model, profiles), {"model": model.name, "version": str(version), "source": source}


def profiles_of(data: Path, *, period: Period = "year") -> pl.DataFrame:
    """Provider profiles of a dataset under the current legislation (for training)."""
    return training_data(data, period=period)[0]


def training_data(data: Path, *, period: Period = "year") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Provider profiles of a dataset under the current legislation, and the attributes a
    fairness report groups them by (:func:`detectors.fairness.provider_attributes`)."""
    tables = load_dataset(data).lazy_tables()
    lines = enriched_lines(tables)
    profiles = provider_profiles(lines, evaluate(tables, lines=lines), period=period, patients=tables.get("patients"))
    return profiles, provider_attributes(lines, tables.get("providers"), period)


def volumes(lines: pl.DataFrame) -> list[dict[str, Any]]:
    """Valid lines and amounts per service year, insurer and channel: the report's denominators."""
    return (
        lines.group_by(pl.col("service_date").dt.year().alias("year"), "insurer_code", "channel")
        .agg(pl.len().alias("lines"), pl.col("amount_reimbursed").sum().round(2).alias("amount_eur"))
        .sort("year", "insurer_code", "channel")
        .to_dicts()
    )


MISCODING_RULES = ("EVENING_VISIT_MISCODING", "NIGHT_WEEKEND_MISCODING")


def software_statistics(lines: pl.DataFrame, flags: pl.DataFrame) -> list[dict[str, Any]]:
    """Per service year and billing package: evening-coded lines, how many carry the typing
    time as their service time, and the miscoding flags on its lines.

    A package whose evening visits mostly bear the moment they were typed hides when they
    took place, which is how batch-typed rounds escape notice; the SECM analyses packages.
    """
    package = pl.col("software_id").fill_null("(not recorded)")
    evening = pl.col("time_window") == "evening"
    miscoding = flags.filter(pl.col("rule_id").is_in(MISCODING_RULES)).select("claim_id", "rule_id")
    per_rule = [
        pl.col("claim_id").is_in(miscoding.filter(pl.col("rule_id") == rule)["claim_id"].implode()).sum().alias(rule)
        for rule in MISCODING_RULES
    ]
    return (
        lines.group_by(pl.col("service_date").dt.year().alias("year"), package.alias("software_id"))
        .agg(
            pl.len().alias("lines"),
            evening.sum().alias("evening_lines"),
            (evening & stamped(pl.col("service_time"), pl.col("encoded_at")).fill_null(False))
            .sum()
            .alias("evening_stamped_lines"),
            *per_rule,
        )
        .with_columns(STAMPED_SHARE)
        .rename({rule: f"{rule.lower()}_flags" for rule in MISCODING_RULES})
        .sort("year", "software_id")
        .to_dicts()
    )


# A quarantined row's insurer as typed, when it is one.
_RAW = pl.col("raw_values").str.json_path_match("$.insurer_code").str.strip_chars()
_RAW_INSURER = (
    pl.when(_RAW.str.contains(INSURER_PATTERN)).then(_RAW).otherwise(pl.lit(INVALID_INSURER)).alias("insurer")
)


def quarantine_by_insurer(quarantine: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Quarantined rows per insurer and reason. The insurer is read in the raw row; a code
    that is not one (absent, or anything but 3 digits) counts under ``invalid``: a report key
    is never a value as typed by whoever sent the file."""
    return _nested(quarantine.select(_RAW_INSURER, "reasons"))


def quarantine_by_year(quarantine: pl.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """Quarantined rows per year of service (or of submission), insurer and reason, so that an
    annual report counts its own year's bad rows; a row whose year cannot be read counts under
    ``unknown``."""
    raw = pl.col("raw_values")
    typed = pl.coalesce(raw.str.json_path_match("$.service_date"), raw.str.json_path_match("$.submitted_date"))
    year = typed.str.extract(r"^\s*((?:19|20)\d{2})-", 1).fill_null("unknown").alias("year")
    return _nested(quarantine.select(year, _RAW_INSURER, "reasons"))


def _nested(keyed: pl.DataFrame) -> Any:
    """Row counts per key column (in order) and reason, as nested dicts."""
    keys = [c for c in keyed.columns if c != "reasons"]
    counts = keyed.explode("reasons").group_by(*keys, "reasons").len().sort(*keys, "reasons")
    result: dict[str, Any] = {}
    for *path, reason, n in counts.iter_rows():
        node = result
        for key in path:
            node = node.setdefault(key, {})
        node[reason] = int(n)
    return result


def _reason_counts(quarantine: pl.DataFrame) -> dict[str, int]:
    counts = quarantine.explode("reasons").group_by("reasons").len().sort("reasons")
    return {row["reasons"]: int(row["len"]) for row in counts.iter_rows(named=True)}

"""A batch run: load and validate a dataset, flag lines, write the contract's outputs."""

from __future__ import annotations

import importlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from data_contracts import TABLES, Dataset, TableStats, found_dataset, load_dataset
from data_contracts.errors import writing
from data_contracts.parsers import INVALID_INSURER, exact_digits
from data_contracts.partitions import Engine, LinePartitions, partitions_for, quarantined_lines, spill_folder
from data_contracts.reader import SourceFile
from detectors.fairness import fairness_report, provider_attributes
from detectors.profiles import (
    PERIOD_YEAR,
    Period,
    ProfileParts,
    combine_profiles,
    keyed_patients,
    profile_parts,
    provider_profiles,
    with_period,
)
from rules import enriched_lines, evaluate, load_catalog, summarise
from rules.catalog import Catalog
from rules.context import STAMPED_SHARE, stamped
from secm.settings import get_settings

if TYPE_CHECKING:
    from api.publish import Publication

VALIDATING = "load_validate_seconds"  # the stage of reading and validating the tables
# What a run imports only once its Polars work has begun, in the order it needs them: the
# enrichment's calendar (every country's module of ``holidays``, then Belgium's: 0.15 s) in
# its first partition, the fairness report's tests (SciPy's statistics: 0.6 s) at its end.
LATER_IMPORTS = ("holidays.countries.belgium", "scipy.stats")


@dataclass(frozen=True)
class RunResult:
    out: Path
    info: dict[str, Any]
    flags: pl.DataFrame


class Stopwatch:
    """Seconds per stage, summed over the stage's turns (one per partition)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {stage: round(seconds, 3) for stage, seconds in self.seconds.items()}


def import_meanwhile() -> None:
    """Start importing :data:`LATER_IMPORTS` in a thread of its own and return: a run spends
    most of its time in Polars, which leaves the interpreter free meanwhile (a third of a small
    run's time went to these imports)."""

    def imports() -> None:
        for module in LATER_IMPORTS:
            importlib.import_module(module)

    threading.Thread(target=imports, name="secm-import", daemon=True).start()


def open_meanwhile(url: str) -> Future[object]:
    """The application database at ``url`` opened, and migrated, in a thread of its own: a run
    that cannot publish learns it at its next step rather than after all its work, and a new
    database's schema (0.2 s) is built while the run works in Polars."""
    from api.database import in_background, migrate

    return in_background("secm-database", migrate, url)


@dataclass(frozen=True)
class _Part:
    """What one partition of the lines contributes to a run."""

    flags: pl.DataFrame
    profiles: ProfileParts
    attributes: pl.DataFrame
    volumes: pl.DataFrame
    software: pl.DataFrame


def _evaluate_part(
    tables: dict[str, pl.LazyFrame],
    *,
    catalog: Catalog,
    legislation: str,
    effective_from: date | None,
    period: Period,
    clock: Stopwatch,
) -> _Part:
    """Flags, profile parts and report figures of the lines in ``tables``."""
    with clock("rules_seconds"):
        lines = enriched_lines(tables)
        flags = evaluate(tables, legislation=legislation, catalog=catalog, lines=lines, effective_from=effective_from)
        lines = with_period(lines, period)  # numbered once for the four groupings below
        volumes, software = volume_counts(lines), software_counts(lines, flags)
    with clock("scoring_seconds"):
        profiles = profile_parts(lines, flags, period=period, patients=tables.get("patients"))
        attributes = provider_attributes(lines, tables.get("providers"), period)
    return _Part(flags, profiles, attributes, volumes, software)


def run(
    data: Path,
    out: Path,
    *,
    legislation: str = "current",
    effective_from: date | None = None,
    catalog_path: Path | None = None,
    period: Period = "year",
    partitions: int | None = None,
    engine: Engine = "polars",
    spark_master: str | None = None,
    on_step: Callable[[str], None] | None = None,
    on_table: Callable[[str, TableStats], None] | None = None,
    publish_to: str | None = None,
) -> RunResult:
    """Write ``flags.parquet``, ``quarantine.parquet``, ``profiles.parquet``,
    ``provider_scores.parquet`` and ``run.json`` under ``out``; then, when ``publish_to``
    names a database, publish the run there for the HTTP service (the database is opened from
    the start, :func:`open_meanwhile`: its error ends the run at the next step).

    The billing lines are processed in ``partitions`` by provider, one at a time, so that
    memory holds one partition (default: :func:`partitions_for`; 1 reads them whole); with
    ``engine="spark"``, side by side in Spark tasks on ``spark_master`` (``secm.spark``). The
    outputs depend on neither.
    """
    import_meanwhile()
    catalog = load_catalog(catalog_path)
    effective_from = catalog.effective_from(legislation, effective_from)
    data = found_dataset(data)  # an unknown legislation or folder opens no database
    database = open_meanwhile(publish_to) if publish_to else None
    clock = Stopwatch()
    started = time.perf_counter()

    def step(message: str) -> None:
        if database is not None and database.done():
            database.result()  # the database's error, if it could not be opened
        if on_step:
            on_step(message)

    step("Loading and validating")
    with clock(VALIDATING):
        if partitions:
            count = partitions
        elif engine == "spark":
            from secm.spark import default_partitions

            count = default_partitions(data, spark_master)
        else:
            count = partitions_for(data)
        dataset = load_dataset(data, on_table=on_table, without_lines=count > 1 or engine == "spark")
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        # Partitions and their profile parts are spilled here, and removed at the end of the run.
        folder = stack.enter_context(spill_folder(out))
        evaluate_part = partial(
            _evaluate_part, catalog=catalog, legislation=legislation, effective_from=effective_from, period=period
        )
        if engine == "spark":
            from secm.spark import evaluate_partitions

            parts, quarantine, lines_stats = evaluate_partitions(
                data, dataset, count, folder, evaluate_part, clock, step, spark_master
            )
        elif count == 1:
            step("Evaluating rules")
            parts = [evaluate_part(dataset.lazy_tables(), clock=clock)]
            quarantine = dataset.quarantine
            lines_stats = dataset.stats["billing_lines"]
        else:
            parts, quarantine, lines_stats = _evaluate_partitions(
                data, dataset, count, folder, partial(evaluate_part, clock=clock), clock, step
            )
        if not parts:  # no partition received a line: the empty table is evaluated as one
            parts = [evaluate_part(dataset.lazy_tables(), clock=clock)]
        if on_table is not None and (engine == "spark" or count > 1):
            on_table("billing_lines", lines_stats)
        flags = pl.concat([p.flags for p in parts]).sort("rule_id", "claim_id")
        identity = {
            "run_id": uuid.uuid4().hex,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset": str(data.resolve()),
            "legislation": legislation,
        }
        publication: Publication | None = None
        if publish_to and database is not None:
            database.result()
            from api.publish import Publication

            # Begun now, the flags are loaded while the profiles are scored.
            publication = stack.enter_context(
                Publication(publish_to, identity, flags=flags, quarantine=quarantine, references=dataset.tables)
            )
        step("Scoring provider profiles")
        with clock("scoring_seconds"):
            profiles = combine_profiles([p.profiles for p in parts])
            scores, detector = _score(profiles)
            attributes = pl.concat([p.attributes for p in parts])
            fairness = fairness_report(scores, profiles, attributes)
        stats = {**dataset.stats, "billing_lines": lines_stats}
        volume = pl.concat([p.volumes for p in parts])

        with clock("write_seconds"), writing(out, "the run's results"):
            flags.write_parquet(out / "flags.parquet")
            quarantine.write_parquet(out / "quarantine.parquet")
            profiles.write_parquet(out / "profiles.parquet")
            scores.write_parquet(out / "provider_scores.parquet")
        timings = {**clock.rounded(), "total_seconds": round(time.perf_counter() - started, 3)}
        info = {
            **identity,
            "outputs": str(out.resolve()),
            "catalog_version": catalog.version,
            "effective_from": effective_from.isoformat() if effective_from else None,
            "partitions": count,
            "engine": engine,
            "tables": {name: stats[name].as_dict() for name in TABLES if name in stats},
            "quarantine_reasons": _reason_counts(quarantine),
            "rules": summarise(flags, catalog),
            "billed_amount_eur": round(float(volume["amount_eur"].sum()), 2),
            "volumes": volumes(volume),
            "software": software_statistics(pl.concat([p.software for p in parts])),
            "quarantine_by_insurer": quarantine_by_insurer(quarantine),
            "quarantine_by_year": quarantine_by_year(quarantine),
            "detector": {**detector, "period": period, "profiles_scored": scores.height},
            "fairness": fairness,
            "timings": timings,
        }
        (out / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        if publication is not None:
            step("Publishing to the application database")
            publication.complete(info, scores, profiles)
            timings["publish_seconds"] = round(time.perf_counter() - started - timings["total_seconds"], 3)
            (out / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return RunResult(out=out, info=info, flags=flags)


def _evaluate_partitions(
    data: Path,
    dataset: Dataset,
    count: int,
    folder: Path,
    evaluate_part: Callable[[dict[str, pl.LazyFrame]], _Part],
    clock: Stopwatch,
    step: Callable[[str], None],
) -> tuple[list[_Part], pl.DataFrame, TableStats]:
    """The billing lines in ``count`` partitions by provider (written under ``folder`` when they
    are not read from the files, see ``LinePartitions.split``), each validated and evaluated in
    turn; with the lines' quarantine and counts."""
    step(f"Partitioning the billing lines by provider ({count} partitions)")
    before = clock.seconds.get(VALIDATING, 0.0)
    with clock(VALIDATING):
        partitioned = LinePartitions.split(data, count, folder)
    parts: list[_Part] = []
    failed: list[pl.DataFrame] = []
    rows_read = 0
    reference = dataset.lazy_tables()
    if "patients" in reference:
        reference["patients"] = keyed_patients(dataset.tables["patients"]).lazy()
    for number, rows in enumerate(partitioned.parts, start=1):
        step(f"Partition {number}/{len(partitioned.parts)}: validating")
        with clock(VALIDATING):
            lines, failures = partitioned.load(rows, dataset.tables)
        if lines.is_empty() and failures.is_empty():  # no provider hashed here
            continue
        rows_read += lines.height + failures.height
        failed.append(failures)
        step(f"Partition {number}/{len(partitioned.parts)}: rules and profiles ({lines.height:,} lines)")
        part = evaluate_part({**reference, "billing_lines": lines.lazy()})
        parts.append(replace(part, profiles=part.profiles.spilled(folder / f"fees-{number}.parquet")))
        del lines  # before the next partition is read
    quarantine, stats = lines_outcome(dataset, partitioned.files, failed, rows_read, clock, before)
    return parts, quarantine, stats


def lines_outcome(
    dataset: Dataset,
    files: list[SourceFile],
    failed: list[pl.DataFrame],
    rows_read: int,
    clock: Stopwatch,
    before: float,
) -> tuple[pl.DataFrame, TableStats]:
    """The run's quarantine once its ``rows_read`` lines were validated in partitions
    (``failed``: each partition's failed rows' keys), and the lines' counts, with the seconds
    ``clock`` spent validating since it stood at ``before``."""
    with clock(VALIDATING):
        quarantined = quarantined_lines(files, failed) if failed else dataset.quarantine.clear()
    seconds = clock.seconds[VALIDATING] - before
    stats = TableStats(rows_read, rows_read - quarantined.height, quarantined.height, seconds)
    return pl.concat([dataset.quarantine, quarantined]).sort("table", "source", "row_number"), stats


def _score(profiles: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str | None]]:
    """Scores by the registered champion, or by the default detector fitted on these profiles.
    The detectors (scikit-learn: seconds to import) are imported here, not where a run's
    partitions are evaluated: a Spark task needs the rules and profiles only."""
    from detectors.scoring import fit_profiles, score_profiles

    champion = None
    if get_settings().may_hold_models:
        from detectors.tracking import load_champion  # MLflow: seconds to import and open

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


def volume_counts(lines: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Valid lines and amounts per service year, insurer and channel, of some lines."""
    return (
        with_period(lines.lazy(), "year")  # numbered by year or by quarter, it gives the year
        .group_by(PERIOD_YEAR.alias("year"), "insurer_code", "channel")
        .agg(pl.len().alias("lines"), pl.col("amount_reimbursed").sum().alias("amount_eur"))
        .collect()
    )


def volumes(counts: pl.DataFrame) -> list[dict[str, Any]]:
    """The report's denominators from :func:`volume_counts` of every part of a run."""
    return (
        counts.group_by("year", "insurer_code", "channel")
        .agg(pl.col("lines").sum(), pl.col("amount_eur").sum().round(2))
        .sort("year", "insurer_code", "channel")
        .to_dicts()
    )


MISCODING_RULES = ("EVENING_VISIT_MISCODING", "NIGHT_WEEKEND_MISCODING")
SOFTWARE_KEYS = ("year", "software_id")


def software_counts(lines: pl.LazyFrame | pl.DataFrame, flags: pl.DataFrame) -> pl.DataFrame:
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
        with_period(lines.lazy(), "year")
        .group_by(PERIOD_YEAR.alias("year"), package.alias("software_id"))
        .agg(
            pl.len().alias("lines"),
            evening.sum().alias("evening_lines"),
            (evening & stamped(pl.col("service_time"), pl.col("encoded_at")).fill_null(False))
            .sum()
            .alias("evening_stamped_lines"),
            *per_rule,
        )
        .collect()
    )


def software_statistics(counts: pl.DataFrame) -> list[dict[str, Any]]:
    """Per service year and billing package, from :func:`software_counts` of every part of a
    run: the counts and the share of evening-coded lines bearing the typing time."""
    return (
        counts.group_by(SOFTWARE_KEYS)
        .agg(pl.exclude(SOFTWARE_KEYS).sum())
        .with_columns(STAMPED_SHARE)
        .rename({rule: f"{rule.lower()}_flags" for rule in MISCODING_RULES})
        .sort(SOFTWARE_KEYS)
        .to_dicts()
    )


# A quarantined row's insurer as typed, when it is one.
_RAW = pl.col("raw_values").str.json_path_match("$.insurer_code").str.strip_chars()
_RAW_INSURER = pl.when(exact_digits(_RAW, 3)).then(_RAW).otherwise(pl.lit(INVALID_INSURER)).alias("insurer")


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

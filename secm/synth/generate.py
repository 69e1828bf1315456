"""Writing a synthetic dataset folder, chunk by chunk so that memory stays bounded."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from data_contracts.loader import default_nomenclature
from data_contracts.tables import TABLES
from secm.synth import anomalies, habits, scenarios
from secm.synth.anomalies import LINES_PER_PATIENT, AnomalySettings
from secm.synth.billing import Calendar, background_lines, dedupe_keys, invoices_for
from secm.synth.population import PatientTraits, make_population

LINE_COLUMNS = list(TABLES["billing_lines"].dtypes)
SCENARIO_CLAIMS = 90_000_000_000  # scenario claim ids live apart from the background's
# Default lines per provider and year: full-time practices (a GP bills about 3 000 a year).
LINES_A_YEAR = 2_500


@dataclass(frozen=True)
class SynthSummary:
    lines: int
    providers: int
    invoices: int
    labelled_flags: int
    anomalous_providers: int


def lines_for_practice(n_providers: int, patients_a_year: int, years: int) -> int:
    """Lines that give ``n_providers`` a median practice of about ``patients_a_year`` patients.

    Practice sizes are log-normal (sigma 0.9), so the mean practice is 1.5 times the median.
    """
    return round(n_providers * patients_a_year * LINES_PER_PATIENT * years * 1.5)


def _rebalance(sizes: np.ndarray, total: int) -> np.ndarray:
    raw = sizes / sizes.sum() * total
    out = np.floor(raw).astype(np.int64)
    out[np.argsort(raw - out)[::-1][: total - out.sum()]] += 1
    return out


def _residents(providers: pl.DataFrame) -> tuple[int, np.ndarray]:
    """How many patient indices there are, and which are nursing-home GPs' residents (a GP's
    list is one contiguous slice of its region's population, see ``shared_pools``)."""
    n = int((providers["pool_base"] + providers["pool_span"]).max())
    residents = np.zeros(n, dtype=bool)
    homes = providers.filter(pl.col("atypical") == "nursing_home")
    for base, start, size in homes.select("pool_base", "pool_start", "pool_size").iter_rows():
        residents[base + start : base + start + size] = True
    return n, residents


def _writer(fmt: str) -> Callable[[pl.DataFrame, Path], None]:
    if fmt == "parquet":
        return lambda df, path: df.write_parquet(path.with_suffix(".parquet"))
    return lambda df, path: df.write_csv(
        path.with_suffix(".csv"), time_format="%H:%M:%S", datetime_format="%Y-%m-%d %H:%M:%S", date_format="%Y-%m-%d"
    )


def generate(
    out: Path,
    *,
    n_lines: int,
    seed: int,
    first_year: int = 2023,
    chunk_lines: int = 1_000_000,
    fmt: str = "parquet",
    progress: Callable[[int], None] | None = None,
    n_providers: int | None = None,
    years: int = 2,
    anomaly_settings: AnomalySettings | None = None,
) -> SynthSummary:
    """Write a dataset of ``n_lines`` billing lines (scenarios included) to ``out``.

    ``n_providers`` defaults to one per :data:`LINES_A_YEAR` lines and year (at least 80). Background
    billing covers ``years`` years from ``first_year``; the rule scenarios always use the
    first two.
    """
    if years not in (1, 2, 3):
        msg = f"years must be 1, 2 or 3, not {years}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    calendar = Calendar.years(first_year, years)
    nomenclature = scenarios.with_retired_code(default_nomenclature(), first_year)
    population = make_population(rng, n_providers or max(80, n_lines // (LINES_A_YEAR * years)), n_lines, years)
    plan = scenarios.plan(
        rng, population, calendar, nomenclature, SCENARIO_CLAIMS, anomaly_settings or AnomalySettings()
    )
    injected = len(plan.injection.lines)
    if n_lines <= injected:
        msg = f"--lines must exceed the {injected} scenario lines"
        raise ValueError(msg)
    # Habits draw from their own stream, so that the rest of a seed's data does not depend on them.
    habit_rng = np.random.default_rng([seed, 1])
    providers = habits.assign(habit_rng, plan.providers, plan.scenario_providers)
    traits = PatientTraits.of(*_residents(providers))
    # A practice whose patients need more care bills more lines per patient.
    need = traits.pool_need(providers, first_year)
    weights = providers["n_lines"].to_numpy() * anomalies.line_factor(providers) * need / need.mean()
    providers = providers.with_columns(pl.Series("n_lines", _rebalance(weights, n_lines - injected)))

    write = _writer(fmt)
    for folder in ("billing_lines", "third_party_invoices", "labels"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    bounds = np.searchsorted(np.cumsum(providers["n_lines"].to_numpy()), np.arange(chunk_lines, n_lines, chunk_lines))
    starts = [0, *sorted(set(bounds.tolist()) - {0}), providers.height]
    claim_offset = invoice_offset = 0
    background_flags = []
    for part, (a, b) in enumerate(itertools.pairwise(starts)):
        chunk = providers.slice(a, b - a)
        lines = background_lines(rng, chunk, calendar, nomenclature, claim_offset, traits)
        lines = dedupe_keys(habits.on_lines(habit_rng, lines, chunk))
        lines, invoices = invoices_for(lines, chunk, rng, invoice_offset)
        habitual = habits.on_invoices(habit_rng, lines, invoices, chunk)
        background_flags += [habits.line_flags(lines), habitual.flags]
        write(lines.select(LINE_COLUMNS), out / "billing_lines" / f"part-{part:05d}")
        write(habitual.invoices, out / "third_party_invoices" / f"part-{part:05d}")
        claim_offset += lines.height
        invoice_offset += invoices.height
        if progress:
            progress(lines.height)

    inj = plan.injection
    line_schema = TABLES["billing_lines"].dtypes
    write(pl.DataFrame(inj.lines, schema=line_schema), out / "billing_lines" / "part-scenarios")
    write(
        pl.DataFrame(inj.invoices, schema=TABLES["third_party_invoices"].dtypes),
        out / "third_party_invoices" / "part-scenarios",
    )
    if progress:
        progress(injected)
    bad_provider = {"provider_nihdi": "10000000099", "profession": "gp", "region": "BRU", "postcode": "12345"}
    provider_rows = pl.concat(
        [providers.select("provider_nihdi", "profession", "region", "postcode"), pl.DataFrame([bad_provider])]
    )
    write(provider_rows, out / "providers")
    write(plan.registry, out / "third_party_registry")
    write(plan.suspensions, out / "tp_suspensions")
    write(plan.debts, out / "provider_debts")
    write(plan.statuses, out / "provider_status")
    write(traits.table(), out / "patients")
    write(nomenclature, out / "nomenclature")

    labels = out / "labels"
    flags = pl.concat([pl.DataFrame(inj.flags, schema=habits.LABEL_SCHEMA), *background_flags])
    flags.write_parquet(labels / "flags.parquet")
    quarantine = pl.DataFrame(inj.quarantine).rename({"claim_id": "key"})
    quarantine = pl.concat(
        [
            quarantine,
            pl.DataFrame([{"table": "providers", "key": bad_provider["provider_nihdi"], "reason": "invalid_postcode"}]),
        ]
    )
    quarantine.write_parquet(labels / "quarantine.parquet")
    anomalous = providers.filter(pl.col("anomaly").is_not_null()).select("provider_nihdi", "anomaly", "intensity")
    anomalous.write_parquet(labels / "providers.parquet")
    providers.filter(pl.col("atypical").is_not_null()).select("provider_nihdi", "atypical").write_parquet(
        labels / "atypical.parquet"
    )
    return SynthSummary(
        lines=n_lines,
        providers=providers.height,
        invoices=invoice_offset + len(inj.invoices),
        labelled_flags=flags.height,
        anomalous_providers=anomalous.height,
    )

"""The generator's background has realistic base rates, and its labels still list every flag."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from data_contracts import load_dataset
from rules import enriched_lines, evaluate
from secm.synth import generate
from secm.synth.generate import SCENARIO_CLAIMS
from secm.synth.labels import mismatches
from secm.synth.population import INSURERS

HABIT_REASONS = {
    ("LATE_ATTESTATION", "late_efact_nurse"),
    ("LATE_ATTESTATION", "late_paper_third_party"),
    ("LATE_ATTESTATION", "late_attestation"),
    ("PSEUDO_TP_NUMBER", "unregistered"),
    ("EVENING_VISIT_MISCODING", "time_outside_window"),
    ("EVENING_VISIT_MISCODING", "batch_encoding"),
}


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("larger") / "data"
    generate(root, n_lines=1_000_000, seed=5)
    return root


BACKGROUND = pl.col("claim_id").str.slice(1).cast(pl.Int64) < SCENARIO_CLAIMS


@pytest.mark.parametrize("legislation", ["current", "reform_art174"])
def test_background_habits_fire_and_are_labelled_exactly(larger: Path, legislation: str) -> None:
    tables = load_dataset(larger).lazy_tables()
    flags = evaluate(tables, lines=enriched_lines(tables), legislation=legislation)
    assert mismatches(flags, larger, legislation).is_empty()
    background = flags.filter(BACKGROUND)
    reasons = set(background.select("rule_id", "reason").unique().iter_rows())
    expected = (
        HABIT_REASONS if legislation == "reform_art174" else HABIT_REASONS - {("LATE_ATTESTATION", "late_attestation")}
    )
    assert reasons == expected
    assert background["insurer_code"].n_unique() >= 5
    # Ordinary providers stay the great majority: base rates, not an epidemic.
    assert background["provider_nihdi"].n_unique() < 0.2 * tables["providers"].collect().height


def test_scenarios_reach_every_insurer(larger: Path) -> None:
    lines = load_dataset(larger).tables["billing_lines"]
    scenario = lines.filter(~BACKGROUND)
    assert set(scenario["insurer_code"]) == set(INSURERS)
    assert lines["insurer_code"].n_unique() == len(INSURERS)


def test_nursing_home_patients_are_elderly_and_chronically_ill(larger: Path) -> None:
    dataset = load_dataset(larger).tables
    homes = pl.read_parquet(larger / "labels" / "atypical.parquet").filter(atypical="nursing_home")
    assert homes.height > 0
    seen = dataset["billing_lines"].select("provider_nihdi", "patient_id").unique()
    mix = (
        seen.join(dataset["patients"], on="patient_id")
        .with_columns(pl.col("provider_nihdi").is_in(homes["provider_nihdi"].implode()).alias("home"))
        .group_by("home")
        .agg((pl.col("birth_year") <= 1945).mean().alias("over_80"), pl.col("chronic_condition").mean())
    )
    home, other = (mix.filter(home=flag).row(0, named=True) for flag in (True, False))
    assert home["over_80"] > 0.8 > 0.4 > other["over_80"]
    assert home["chronic_condition"] > 0.9 > 0.4 > other["chronic_condition"]

"""The fairness report names a disparity planted in the scores, and only a large one."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from data_contracts import load_dataset
from detectors.fairness import fairness_report, provider_attributes
from detectors.profiles import provider_profiles
from detectors.scoring import fit_profiles, score_profiles
from rules import enriched_lines, evaluate


@pytest.fixture(scope="module")
def scored(synthetic: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    tables = load_dataset(synthetic).lazy_tables()
    lines = enriched_lines(tables)
    profiles = provider_profiles(lines, evaluate(tables, lines=lines))
    scores = score_profiles(fit_profiles(profiles), profiles)
    return scores, profiles, provider_attributes(lines, tables["providers"])


def _named(report: dict[str, object], dimension: str) -> set[tuple[str, str]]:
    return {(d["group"], d["measure"]) for d in report["disparities"] if d["dimension"] == dimension}  # type: ignore[attr-defined, index]


def test_a_regional_bias_planted_in_the_scores_is_named(scored: tuple[pl.DataFrame, ...]) -> None:
    scores, profiles, attributes = scored
    plain = fairness_report(scores, profiles, attributes)
    assert _named(plain, "region") == set()
    walloon = profiles.filter(pl.col("region") == "WAL").select("provider_nihdi", "period")
    assert walloon.height >= 20
    raised = walloon.with_columns(pl.lit(5.0).alias("bias"))
    biased = scores.join(raised, on=["provider_nihdi", "period"], how="left").with_columns(
        pl.col("score") + pl.col("bias").fill_null(0.0)
    )
    report = fairness_report(biased, profiles, attributes)
    assert ("WAL", "score_superiority") in _named(report, "region")
    found = next(d for d in report["disparities"] if d["group"] == "WAL")
    assert found["value"] > 0.64
    assert found["p_value"] < 0.01
    assert found["profiles"] == walloon.height
    # The rest of Belgium scores lower by the same token; nothing else is touched.
    assert _named(report, "insurer") == _named(plain, "insurer")


def test_groups_carry_their_measures_and_small_groups_are_not_tested(scored: tuple[pl.DataFrame, ...]) -> None:
    scores, profiles, attributes = scored
    report = fairness_report(scores, profiles, attributes, min_group=10_000)
    assert report["disparities"] == []
    assert report["profiles"] == scores.height
    dimensions = {g["dimension"] for g in report["groups"]}
    assert dimensions == {"region", "language", "insurer", "practice_size"}
    regions = {g["group"]: g for g in report["groups"] if g["dimension"] == "region"}
    assert sum(g["profiles"] for g in regions.values()) == scores.height
    assert all(g["score_superiority"] is None for g in regions.values())
    flagged = (profiles["rule_hit_rate"] > 0).mean()
    assert report["overall"]["flagged_share"] == pytest.approx(flagged, abs=1e-3)


def test_language_comes_from_region_and_postcode() -> None:
    keys = {"provider_nihdi": ["1", "2", "3", "4"], "period": ["2024"] * 4}
    profiles = pl.DataFrame(
        {
            **keys,
            "profession": ["gp"] * 4,
            "region": ["VLA", "WAL", "WAL", "BRU"],
            "patients": [10.0, 20.0, 30.0, 40.0],
            "rule_hit_rate": [0.0, 0.1, 0.0, 0.0],
        }
    )
    attributes = pl.DataFrame({**keys, "insurer": ["100"] * 4, "postcode": ["9000", "4700", "5000", "1000"]})
    scores = pl.DataFrame({**keys, "score": [1.0, 2.0, 3.0, 4.0]})
    report = fairness_report(scores, profiles, attributes)
    languages = {g["group"]: g["profiles"] for g in report["groups"] if g["dimension"] == "language"}
    assert languages == {"nl": 1, "de": 1, "fr": 1, "fr-nl": 1}
    sizes = {g["group"]: g["profiles"] for g in report["groups"] if g["dimension"] == "practice_size"}
    assert sizes == {"small": 1, "medium": 2, "large": 1}

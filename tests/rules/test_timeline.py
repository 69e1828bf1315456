"""Legislation versions with a date of entry into force: each line follows the version of its
date of service (contract v2), in the batch engine, on durable_rules and in what-if."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path

import polars as pl
import pytest

from data_contracts import load_dataset
from rules import evaluate, load_catalog, parse_catalog, whatif
from tests import factories as f
from tests.factories import flags

START = date(2024, 3, 15)


def _lines() -> list[dict[str, object]]:
    """Attestations submitted 18 months after the service: late under the reform only."""
    days = {"BEFORE": date(2024, 3, 14), "ON": START, "AFTER": date(2024, 3, 16)}
    return [
        f.line(k, channel="paper_cash", service_date=d, submitted_date=date(2025, 9, 20), patient_id=k)
        for k, d in days.items()
    ]


@pytest.mark.parametrize(
    ("effective_from", "late"),
    [
        (None, {"BEFORE", "ON", "AFTER"}),  # without a date the version governs every line
        (START, {"ON", "AFTER"}),  # service_date >= effective_from follows the reform
        (date(2024, 3, 16), {"AFTER"}),
        (date(2024, 3, 17), set()),
    ],
)
def test_each_line_follows_the_version_of_its_service_date(
    tmp_path: Path, effective_from: date | None, late: set[str]
) -> None:
    result = flags(tmp_path, "reform_art174", effective_from, lines=_lines())
    flagged = result.filter(pl.col("rule_id") == "LATE_ATTESTATION")
    assert set(flagged["claim_id"]) == late
    assert set(flagged["legislation"]) <= {"reform_art174"}


def test_rules_the_reform_leaves_alone_say_which_version_applied(tmp_path: Path) -> None:
    lines = [
        f.line("D1", service_date=date(2024, 3, 14), submitted_date=date(2024, 3, 14), patient_id="P"),
        f.line("D2", service_date=date(2024, 3, 14), submitted_date=date(2024, 3, 14), patient_id="P"),
        f.line("E1", patient_id="Q"),
        f.line("E2", patient_id="Q"),
    ]
    result = flags(tmp_path, "reform_art174", START, lines=lines)
    duplicates = result.filter(pl.col("rule_id") == "DUPLICATE_BILLING")
    assert dict(zip(duplicates["claim_id"], duplicates["legislation"], strict=True)) == {
        "D2": "current",
        "E2": "reform_art174",
    }


def test_the_catalog_may_date_a_version(tmp_path: Path) -> None:
    text = (resources.files("rules") / "catalog.yaml").read_text(encoding="utf-8")
    dated = text.replace(
        "  reform_art174: Reform proposed",
        "  reform_art174:\n    effective_from: 2024-03-16\n    description: Reform proposed",
    )
    catalog = parse_catalog(dated)
    assert catalog.effective_from("reform_art174") == date(2024, 3, 16)
    assert catalog.effective_from("reform_art174", START) == START  # an explicit date wins
    assert catalog.effective_from("current", START) is None  # current governs what no version does
    tables = load_dataset(f.write_dataset(tmp_path, lines=_lines())).lazy_tables()
    late = evaluate(tables, legislation="reform_art174", catalog=catalog).filter(
        pl.col("rule_id") == "LATE_ATTESTATION"
    )
    assert late["claim_id"].to_list() == ["AFTER"]
    assert load_catalog().effective_from("reform_art174") is None  # the shipped catalog dates nothing


def test_whatif_compares_two_timelines(tmp_path: Path) -> None:
    tables = load_dataset(f.write_dataset(tmp_path, lines=_lines())).lazy_tables()

    def newly(**kw: object) -> int:
        changes = whatif(tables, legislation="reform_art174", **kw)  # type: ignore[arg-type]
        return int(changes.filter(pl.col("change") == "newly_flagged")["lines"].sum())

    assert newly() == 3
    assert newly(effective_from=START) == 2
    # Against a baseline timeline in which the reform already governs from the 16th.
    assert newly(effective_from=START, baseline="reform_art174", baseline_effective_from=date(2024, 3, 16)) == 1

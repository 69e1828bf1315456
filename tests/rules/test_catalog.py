from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml

import rules
from rules import CatalogError, LegislationError, evaluate, load_catalog, parse_catalog
from rules.catalog import RuleDeclaration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "catalogs"
CONTRACT_RULES = {
    "LATE_ATTESTATION",
    "PSEUDO_TP_NUMBER",
    "TP_NUMBER_NOT_AUTHORIZED",
    "EVENING_VISIT_MISCODING",
    "TP_SUSPENDED_BILLING",
    "DEBT_BLOCKED_BILLING",
    "DUPLICATE_BILLING",
    "NIGHT_WEEKEND_MISCODING",
    "NOMENCLATURE_NONCONFORMITY",
    "PROVIDER_NOT_ENTITLED",
}


def test_shipped_catalog_declares_the_contract_rules_with_titles_and_legal_basis() -> None:
    catalog = load_catalog()
    assert {r.id for r in catalog} == CONTRACT_RULES
    for rule in catalog:
        assert rule.titles.fr
        assert rule.titles.nl
        assert rule.titles.en
        assert rule.legal_basis


def test_thresholds_are_parameters_with_the_contract_defaults() -> None:
    catalog = load_catalog()
    assert catalog.rule("LATE_ATTESTATION").parameters_for("current")["limitation_years"] == 2
    assert catalog.rule("LATE_ATTESTATION").parameters_for("reform_art174")["limitation_years"] == 1
    evening = catalog.rule("EVENING_VISIT_MISCODING").parameters_for("current")
    assert (evening["max_gap_minutes"], evening["min_burst_lines"]) == (10, 3)
    debt = catalog.rule("DEBT_BLOCKED_BILLING").parameters_for("current")
    assert (debt["min_debt_eur"], debt["plan_years"]) == (50_000, 5)


def test_legal_bases_follow_the_seed_texts() -> None:
    catalog = load_catalog()
    assert "art. 42, part 3" in catalog.rule("EVENING_VISIT_MISCODING").legal_basis
    assert "art. 53" not in catalog.rule("LATE_ATTESTATION").legal_basis  # the RD delivery deadline is not checked


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        (
            "error-negative-parameter.yaml",
            "The 'max_gap_minutes' parameter of rule EVENING_VISIT_MISCODING must be at least 1. Got -3.",
        ),
        ("error-unknown-shape.yaml", "Rule DUPLICATE_BILLING, field 'checks.0'"),
        ("error-missing-legal-basis.yaml", "Rule TP_SUSPENDED_BILLING, field 'legal_basis': Field required."),
        (
            "error-unknown-parameter.yaml",
            "In rule EVENING_VISIT_MISCODING, check 2 (burst), 'min_run' refers to unknown parameter 'min_lines'.",
        ),
        (
            "error-bad-sql.yaml",
            "In rule PSEUDO_TP_NUMBER, check 1 (line_predicate), 'when' is not a valid SQL expression",
        ),
        ("error-duplicate-rule.yaml", "Rule LATE_ATTESTATION is declared twice."),
        ("error-unknown-legislation.yaml", "names unknown legislation(s) ['reform_2030']"),
    ],
)
def test_broken_catalogs_fail_with_a_message_naming_rule_and_field(fixture: str, message: str) -> None:
    with pytest.raises(CatalogError) as error:
        load_catalog(FIXTURES / fixture)
    assert message in str(error.value)


def test_unknown_legislation_is_refused() -> None:
    with pytest.raises(LegislationError, match="reform_2030"):
        evaluate({}, legislation="reform_2030")


def test_a_new_rule_of_an_existing_shape_needs_only_a_declaration() -> None:
    """A weekend-visit check declared in YAML runs without any engine change."""
    document = yaml.safe_load((Path(rules.__file__).parent / "catalog.yaml").read_text())
    document["rules"].append(
        {
            "id": "WEEKEND_CODE_ON_WEEKDAY",
            "titles": {
                "fr": "Code week-end en semaine",
                "nl": "Weekendcode op weekdag",
                "en": "Weekend code on a weekday",
            },
            "legal_basis": "Nomenclature of health services",
            "description": "A weekend visit code billed on a weekday.",
            "severity": "low",
            "checks": [
                {
                    "shape": "line_predicate",
                    "reason": "weekday",
                    "when": "time_window = 'weekend' AND dayofweek(service_date) BETWEEN 1 AND 5",
                }
            ],
        }
    )
    catalog = parse_catalog(yaml.safe_dump(document))
    rule = catalog.rule("WEEKEND_CODE_ON_WEEKDAY")
    assert isinstance(rule, RuleDeclaration)
    frame = pl.DataFrame(
        {"time_window": ["weekend", "weekend"], "service_date": [date(2024, 3, 15), date(2024, 3, 16)]}
    )
    assert frame.filter(rule.sql(rule.checks[0].when, "current")).height == 1  # Friday, not Saturday

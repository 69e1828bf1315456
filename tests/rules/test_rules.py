"""Each rule's boundary cases, taken from the data contract's own words."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts import load_dataset
from rules import evaluate
from rules.durable_engine import evaluate_durable
from tests import factories as f


def flags(tmp_path: Path, legislation: str = "current", **tables: Any) -> pl.DataFrame:
    """The Polars engine's flags, after checking the durable_rules back end flags the same."""
    dataset = load_dataset(f.write_dataset(tmp_path, **tables))
    assert dataset.quarantine.is_empty(), dataset.quarantine.to_dicts()
    batch = evaluate(dataset.lazy_tables(), legislation=legislation)
    assert_frame_equal(evaluate_durable(dataset.lazy_tables(), legislation=legislation), batch)
    return batch


def flagged(frame: pl.DataFrame, rule_id: str) -> dict[str, str]:
    """claim_id -> reason for one rule."""
    rows = frame.filter(pl.col("rule_id") == rule_id)
    return dict(zip(rows["claim_id"], rows["reason"], strict=True))


# LATE_ATTESTATION -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "submitted", "current", "reform"),
    [
        (date(2023, 3, 15), date(2025, 3, 15), False, True),  # deadline day: + 2 years
        (date(2023, 3, 15), date(2025, 3, 16), True, True),
        (date(2023, 3, 15), date(2024, 3, 15), False, False),  # reform deadline day: + 1 year
        (date(2023, 3, 15), date(2024, 3, 16), False, True),
        (date(2024, 2, 29), date(2026, 2, 28), False, True),  # 29 February -> 28 February
        (date(2024, 2, 29), date(2026, 3, 1), True, True),
        (date(2024, 2, 29), date(2025, 2, 28), False, False),
        (date(2024, 2, 29), date(2025, 3, 1), False, True),
    ],
)
def test_attestation_deadline_is_two_years_one_under_the_reform(
    tmp_path: Path, service: date, submitted: date, current: bool, reform: bool
) -> None:
    lines = [f.line("A", channel="paper_cash", service_date=service, submitted_date=submitted)]
    assert ("A" in flagged(flags(tmp_path / "c", lines=lines), "LATE_ATTESTATION")) is current
    assert ("A" in flagged(flags(tmp_path / "r", "reform_art174", lines=lines), "LATE_ATTESTATION")) is reform


@pytest.mark.parametrize(
    ("service", "submitted", "late"),
    [
        (date(2024, 1, 31), date(2024, 2, 29), False),  # end of the next month (leap year)
        (date(2024, 1, 31), date(2024, 3, 1), True),
        (date(2023, 12, 1), date(2024, 1, 31), False),  # across the year end
        (date(2023, 12, 1), date(2024, 2, 1), True),
    ],
)
def test_nurse_efact_deadline_is_end_of_next_month(tmp_path: Path, service: date, submitted: date, late: bool) -> None:
    lines = [f.tp_line("A", "INV1", provider_nihdi=f.NURSE, nomenclature_code="425014", service_date=service)]
    result = flags(
        tmp_path, lines=lines, invoices=[f.invoice("INV1", submitted)], registry_rows=[f.registry(nihdi=f.NURSE)]
    )
    assert flagged(result, "LATE_ATTESTATION") == ({"A": "late_efact_nurse"} if late else {})


def test_gp_efact_is_not_held_to_the_nurse_delay(tmp_path: Path) -> None:
    result = flags(tmp_path, lines=[f.tp_line("A", "INV1")], invoices=[f.invoice("INV1", date(2024, 9, 1))])
    assert flagged(result, "LATE_ATTESTATION") == {}


@pytest.mark.parametrize(
    ("service", "submitted", "late"),
    [
        (date(2023, 12, 31), date(2024, 2, 29), False),  # end of the second month after
        (date(2023, 12, 31), date(2024, 3, 1), True),
        (date(2023, 11, 30), date(2024, 1, 31), False),
    ],
)
def test_paper_third_party_deadline_is_two_months_after_the_month(
    tmp_path: Path, service: date, submitted: date, late: bool
) -> None:
    lines = [f.tp_line("A", "INV1", channel="paper_third_party", service_date=service)]
    result = flags(tmp_path, lines=lines, invoices=[f.invoice("INV1", submitted)])
    assert flagged(result, "LATE_ATTESTATION") == ({"A": "late_paper_third_party"} if late else {})


def test_institution_lines_have_two_years_whatever_the_channel(tmp_path: Path) -> None:
    line = f.tp_line("A", "INV1", provider_nihdi=f.NURSE, nomenclature_code="425014", institution_nihdi="71234567000")
    result = flags(
        tmp_path,
        lines=[line],
        invoices=[f.invoice("INV1", date(2025, 3, 15))],
        registry_rows=[f.registry(nihdi=f.NURSE)],
    )
    assert flagged(result, "LATE_ATTESTATION") == {}
    evidence_free = flags(
        tmp_path / "late",
        lines=[line],
        invoices=[f.invoice("INV1", date(2026, 3, 16))],
        registry_rows=[f.registry(nihdi=f.NURSE)],
    )
    late = evidence_free.filter(pl.col("rule_id") == "LATE_ATTESTATION")
    assert late["reason"].to_list() == ["late_institution"]
    evidence = json.loads(late["evidence"][0])
    assert evidence == {
        "regime": "institution",
        "deadline": "2026-03-15",
        "effective_submitted_date": "2026-03-16",
        "days_late": 1,
    }
    assert late["amount_at_stake_eur"].to_list() == [23.63]


# Third-party numbers -----------------------------------------------------------------------


def test_pseudo_numbers_missing_unregistered_and_validity_bounds(tmp_path: Path) -> None:
    lines = [
        f.tp_line("MISSING", "I1"),
        f.tp_line("PSEUDO", "I2"),
        f.tp_line("LAST_DAY", "I3", service_date=date(2023, 6, 30)),
        f.tp_line("DAY_AFTER", "I3", service_date=date(2023, 7, 1)),
        f.tp_line("BEFORE_START", "I4", service_date=date(2022, 12, 31)),
        f.tp_line("CASH", None, channel="eattest", submitted_date=date(2024, 3, 15)) | {"invoice_id": None},
    ]
    invoices = [
        f.invoice("I1", number=None),
        f.invoice("I2", number="0999999922"),
        f.invoice("I3", date(2023, 7, 10), number="0400000009"),
        f.invoice("I4", date(2023, 1, 10), number=f.NUMBER),
    ]
    registry = [
        f.registry(valid_from=date(2023, 1, 1)),
        f.registry("0400000009", valid_from=date(2020, 1, 1), valid_to=date(2023, 6, 30)),
    ]
    result = flags(tmp_path, lines=lines, invoices=invoices, registry_rows=registry)
    assert flagged(result, "PSEUDO_TP_NUMBER") == {
        "MISSING": "missing",
        "PSEUDO": "unregistered",
        "DAY_AFTER": "not_valid_on_date",
        "BEFORE_START": "not_valid_on_date",
    }
    assert flagged(result, "TP_NUMBER_NOT_AUTHORIZED") == {}


def test_number_valid_on_date_but_not_for_this_provider(tmp_path: Path) -> None:
    lines = [
        f.tp_line("STILL_IN", "I1", service_date=date(2023, 3, 31)),
        f.tp_line("LEFT", "I1", service_date=date(2023, 4, 1)),
        f.tp_line("OTHER", "I1", provider_nihdi=f.OTHER_GP),
    ]
    registry = [
        f.registry(valid_to=date(2023, 3, 31)),
        f.registry(nihdi=f.NURSE),
    ]
    result = flags(tmp_path, lines=lines, invoices=[f.invoice("I1")], registry_rows=registry)
    assert flagged(result, "TP_NUMBER_NOT_AUTHORIZED") == {
        "LEFT": "provider_not_authorized",
        "OTHER": "provider_not_authorized",
    }
    assert json.loads(result.filter(pl.col("claim_id") == "OTHER")["evidence"][0])["tp_authorized_on_date"] == f.NURSE
    assert flagged(result, "PSEUDO_TP_NUMBER") == {}


# EVENING_VISIT_MISCODING -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "outside"),
    [(time(17, 59), True), (time(18, 0), False), (time(20, 59), False), (time(21, 0), True), (None, False)],
)
def test_evening_window_start_inclusive_end_exclusive(tmp_path: Path, at: time | None, outside: bool) -> None:
    result = flags(tmp_path, lines=[f.line("A", nomenclature_code="104215", service_time=at, place_of_service="home")])
    assert flagged(result, "EVENING_VISIT_MISCODING") == ({"A": "time_outside_window"} if outside else {})
    if outside:
        assert result["amount_at_stake_eur"].to_list() == [18.0]  # 63.00 evening - 45.00 day visit


def _burst(gaps: list[int], code: str = "104215") -> list[dict[str, Any]]:
    day, minute, rows = date(2024, 3, 15), 0, []
    for i, gap in enumerate([0, *gaps]):
        minute += gap
        rows.append(
            f.line(
                f"B{i}",
                nomenclature_code=code,
                service_time=time(19, 0),
                patient_id=f"P{i}",
                encoded_at=f.evening_at(day, 22, 0).replace(minute=minute),
            )
        )
    return rows


@pytest.mark.parametrize(
    ("gaps", "expected"),
    [
        ([9, 9], {"B0", "B1", "B2"}),  # a run of 3, each under 10 minutes
        ([10, 10], set()),  # 10 minutes is not "less than 10"
        ([5], set()),  # a run of 2
        ([10, 5, 5], {"B1", "B2", "B3"}),
        ([0, 0], {"B0", "B1", "B2"}),  # typed in the same minute
    ],
)
def test_batch_encoding_runs(tmp_path: Path, gaps: list[int], expected: set[str]) -> None:
    result = flagged(flags(tmp_path, lines=_burst(gaps)), "EVENING_VISIT_MISCODING")
    assert set(result) == expected
    assert set(result.values()) <= {"batch_encoding"}


def test_batch_encoding_only_counts_home_visits(tmp_path: Path) -> None:
    assert flagged(flags(tmp_path, lines=_burst([1, 1], code="101275")), "EVENING_VISIT_MISCODING") == {}


def test_burst_evidence_gives_size_and_span(tmp_path: Path) -> None:
    result = flags(tmp_path, lines=_burst([9, 9]))
    evidence = json.loads(result["evidence"][0])
    assert evidence["burst_size"] == 3
    assert evidence["burst_span_minutes"] == 18.0


# Suspensions and debts ---------------------------------------------------------------------


def test_suspension_bounds_are_inclusive_and_cash_is_allowed(tmp_path: Path) -> None:
    days = {"BEFORE": date(2024, 2, 29), "START": date(2024, 3, 1), "END": date(2024, 3, 31), "AFTER": date(2024, 4, 1)}
    lines = [f.tp_line(k, "I1", service_date=d) for k, d in days.items()] + [
        f.line("CASH", service_date=date(2024, 3, 10), submitted_date=date(2024, 3, 10))
    ]
    suspension = {
        "provider_nihdi": f.GP,
        "start_date": date(2024, 3, 1),
        "end_date": date(2024, 3, 31),
        "decision_ref": "D1",
    }
    result = flags(tmp_path, lines=lines, invoices=[f.invoice("I1")], suspensions=[suspension])
    assert set(flagged(result, "TP_SUSPENDED_BILLING")) == {"START", "END"}


def test_open_suspension_never_ends(tmp_path: Path) -> None:
    suspension = {"provider_nihdi": f.GP, "start_date": date(2020, 1, 1), "end_date": None, "decision_ref": None}
    result = flags(tmp_path, lines=[f.tp_line("A", "I1")], invoices=[f.invoice("I1")], suspensions=[suspension])
    assert flagged(result, "TP_SUSPENDED_BILLING") == {"A": "billed_during_suspension"}


def _debt(amount: float = 50_000.0, **kw: Any) -> dict[str, Any]:
    return {
        "provider_nihdi": f.GP,
        "debt_from": date(2024, 1, 1),
        "debt_to": None,
        "amount_eur": amount,
        "plan_from": None,
        "plan_respected": False,
        **kw,
    }


@pytest.mark.parametrize(
    ("debt", "blocked"),
    [
        (_debt(49_999.99), False),
        (_debt(50_000.0), True),
        (_debt(debt_to=date(2024, 3, 15)), False),  # settled that day: exclusive
        (_debt(debt_to=date(2024, 3, 16)), True),
        (_debt(debt_from=date(2024, 3, 15)), True),
        (_debt(plan_from=date(2024, 3, 15), plan_respected=True), False),  # plan in force
        (_debt(plan_from=date(2024, 3, 16), plan_respected=True), True),  # plan not yet started
        (_debt(plan_from=date(2024, 1, 1), plan_respected=False), True),  # plan not respected
    ],
)
def test_debt_blocks_billing_without_a_plan_in_force(tmp_path: Path, debt: dict[str, Any], blocked: bool) -> None:
    result = flags(tmp_path, lines=[f.line("A")], debts=[debt])
    assert flagged(result, "DEBT_BLOCKED_BILLING") == ({"A": "debt_without_plan"} if blocked else {})


# DUPLICATE_BILLING -------------------------------------------------------------------------


def test_duplicates_keep_the_first_submitted_then_smallest_claim(tmp_path: Path) -> None:
    same = {"patient_id": "P", "service_time": time(10, 0)}
    lines = [
        f.line("A1", submitted_date=date(2024, 3, 20), **same),
        f.line("A2", submitted_date=date(2024, 3, 16), **same),
        f.line("A3", submitted_date=date(2024, 3, 16), **same),
        f.line("N1", patient_id="Q", service_time=None),
        f.line("N2", patient_id="Q", service_time=None),
        f.line("T1", patient_id="R", service_time=time(10, 0)),
        f.line("T2", patient_id="R", service_time=time(10, 5)),
    ]
    result = flags(tmp_path, lines=lines)
    assert set(flagged(result, "DUPLICATE_BILLING")) == {"A1", "A3", "N2"}
    kept = {json.loads(e)["kept_claim_id"] for e in result.filter(pl.col("rule_id") == "DUPLICATE_BILLING")["evidence"]}
    assert kept == {"A2", "N1"}


def test_no_lines_no_flags(tmp_path: Path) -> None:
    result = flags(tmp_path, lines=[])
    assert result.is_empty()
    assert "amount_at_stake_eur" in result.columns

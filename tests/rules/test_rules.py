"""Each rule's boundary cases, taken from the data contract's own words."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests import factories as f
from tests.factories import flagged, flags

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


def _burst(gaps: list[int], code: str = "104215", *, stamped: bool = True) -> list[dict[str, Any]]:
    """Evening home visits typed from 19:00 with these gaps; the software stamped the typing
    time as the service time (``stamped``) or recorded none."""
    day, rows = date(2024, 3, 15), []
    typed = f.evening_at(day, 19, 0)
    for i, gap in enumerate([0, *gaps]):
        typed += timedelta(minutes=gap)
        rows.append(
            f.line(
                f"B{i}",
                nomenclature_code=code,
                service_time=typed.time() if stamped else None,
                patient_id=f"P{i}",
                encoded_at=typed,
                place_of_service="home",
            )
        )
    return rows


@pytest.mark.parametrize("stamped", [True, False])
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
def test_batch_encoding_runs(tmp_path: Path, gaps: list[int], expected: set[str], stamped: bool) -> None:
    result = flagged(flags(tmp_path, lines=_burst(gaps, stamped=stamped)), "EVENING_VISIT_MISCODING")
    assert set(result) == expected
    assert set(result.values()) <= {"batch_encoding"}


def _recorded(times: list[time], typed: list[datetime]) -> list[dict[str, Any]]:
    """Evening home visits on 2024-03-15 with these service times, typed at these moments."""
    return [
        f.line(
            f"R{i}",
            nomenclature_code="104215",
            service_time=t,
            encoded_at=e,
            patient_id=f"P{i}",
            place_of_service="home",
        )
        for i, (t, e) in enumerate(zip(times, typed, strict=True))
    ]


def test_visits_recorded_apart_but_typed_together_are_not_a_burst(tmp_path: Path) -> None:
    # Contract v2: genuine times 18:10, 18:50 and 19:30, all typed at 21:30.
    day = date(2024, 3, 15)
    lines = _recorded([time(18, 10), time(18, 50), time(19, 30)], [f.evening_at(day, 21, 30)] * 3)
    assert flagged(flags(tmp_path, lines=lines), "EVENING_VISIT_MISCODING") == {}


def test_visits_recorded_minutes_apart_are_a_burst_whenever_typed(tmp_path: Path) -> None:
    # Contract v2: recorded at 19:00, 19:05 and 19:08, typed hours apart the next morning.
    next_day = date(2024, 3, 16)
    typed = [f.evening_at(next_day, 8, 0), f.evening_at(next_day, 10, 0), f.evening_at(next_day, 12, 0)]
    lines = _recorded([time(19, 0), time(19, 5), time(19, 8)], typed)
    result = flags(tmp_path, lines=lines)
    assert flagged(result, "EVENING_VISIT_MISCODING") == dict.fromkeys(("R0", "R1", "R2"), "batch_encoding")
    evidence = json.loads(result.filter(pl.col("claim_id") == "R2")["evidence"][0])
    assert evidence["recorded_at"] == "2024-03-15 19:08:00"
    assert evidence["burst_span_minutes"] == 8.0


def test_a_service_time_equal_to_the_typing_minute_is_the_typing_time(tmp_path: Path) -> None:
    # Stamped to the minute (seconds differ): the typing times, 12 minutes apart, are what counts.
    day = date(2024, 3, 15)
    typed = [datetime(2024, 3, 15, 19, 0, 40), datetime(2024, 3, 15, 19, 12, 5), datetime(2024, 3, 15, 19, 24, 59)]
    lines = _recorded([time(19, 0), time(19, 12), time(19, 24)], typed)
    assert flagged(flags(tmp_path / "apart", lines=lines), "EVENING_VISIT_MISCODING") == {}
    # One minute off the typing time is a time of its own: 19:01, 19:02, 19:03 make a burst.
    lines = _recorded([time(19, 1), time(19, 2), time(19, 3)], [f.evening_at(day, 19, m) for m in (0, 30, 59)])
    assert set(flagged(flags(tmp_path / "own", lines=lines), "EVENING_VISIT_MISCODING")) == {"R0", "R1", "R2"}


def test_batch_encoding_only_counts_home_visits(tmp_path: Path) -> None:
    lines = [row | {"place_of_service": "office"} for row in _burst([1, 1], code="101275")]
    assert flagged(flags(tmp_path, lines=lines), "EVENING_VISIT_MISCODING") == {}


def test_burst_evidence_gives_size_and_span(tmp_path: Path) -> None:
    result = flags(tmp_path, lines=_burst([9, 9]))
    evidence = json.loads(result.filter(pl.col("rule_id") == "EVENING_VISIT_MISCODING")["evidence"][0])
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
    assert flagged(result, "TP_SUSPENDED_BILLING") == {"A": "service_during_suspension"}


MARCH_SUSPENSION = {
    "provider_nihdi": f.GP,
    "start_date": date(2024, 3, 1),
    "end_date": date(2024, 3, 31),
    "decision_ref": "D1",
}


@pytest.mark.parametrize(
    ("submitted", "reason"),
    [
        (date(2024, 2, 29), None),  # submitted the day before the suspension
        (date(2024, 3, 1), "invoice_during_suspension"),  # its first day
        (date(2024, 3, 31), "invoice_during_suspension"),  # its last day (inclusive)
        (date(2024, 4, 1), None),
    ],
)
def test_invoice_submitted_during_a_suspension_for_an_earlier_service(
    tmp_path: Path, submitted: date, reason: str | None
) -> None:
    lines = [
        f.tp_line("EARLIER", "I1", service_date=date(2024, 2, 15)),
        f.tp_line("DURING", "I2", service_date=date(2024, 3, 1), patient_id="Q"),
        f.line("CASH", service_date=date(2024, 2, 15), submitted_date=submitted, patient_id="R"),
    ]
    invoices = [f.invoice("I1", submitted), f.invoice("I2", date(2024, 3, 20))]
    result = flags(tmp_path, lines=lines, invoices=invoices, suspensions=[MARCH_SUSPENSION])
    found = flagged(result, "TP_SUSPENDED_BILLING")
    assert found.get("EARLIER") == reason
    # A service in the suspension is the first case, even invoiced during it; cash is allowed.
    assert found["DURING"] == "service_during_suspension"
    assert "CASH" not in found
    if reason:
        evidence = json.loads(result.filter(pl.col("claim_id") == "EARLIER")["evidence"][0])
        assert evidence["effective_submitted_date"] == submitted.isoformat()
        assert evidence["decision_ref"] == "D1"


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
        (_debt(plan_from=date(2024, 3, 15), plan_respected=True), False),  # plan day 0: in force
        (_debt(plan_from=date(2024, 3, 16), plan_respected=True), True),  # plan not yet started
        (_debt(plan_from=date(2024, 1, 1), plan_respected=False), True),  # plan not respected
        (_debt(plan_from=date(2019, 3, 16), plan_respected=True), False),  # last day of its five years
        (_debt(plan_from=date(2019, 3, 15), plan_respected=True), True),  # five years on: over
    ],
)
def test_debt_blocks_billing_without_a_plan_in_force(tmp_path: Path, debt: dict[str, Any], blocked: bool) -> None:
    result = flags(tmp_path, lines=[f.line("A")], debts=[debt])
    assert flagged(result, "DEBT_BLOCKED_BILLING") == ({"A": "debt_without_plan"} if blocked else {})


@pytest.mark.parametrize(
    ("service", "blocked"),
    [(date(2025, 2, 27), False), (date(2025, 2, 28), True)],  # a plan from 29 February 2020 ends 28 February 2025
)
def test_a_plan_from_29_february_ends_on_28_february(tmp_path: Path, service: date, blocked: bool) -> None:
    debt = _debt(debt_from=date(2020, 1, 1), plan_from=date(2020, 2, 29), plan_respected=True)
    result = flags(tmp_path, lines=[f.line("A", service_date=service, submitted_date=service)], debts=[debt])
    assert ("A" in flagged(result, "DEBT_BLOCKED_BILLING")) is blocked


@pytest.mark.parametrize(
    ("amounts", "blocked"),
    [((30_000.0, 30_000.0), True), ((25_000.0, 24_999.99), False), ((25_000.0, 25_000.0), True)],
)
def test_open_debts_add_up_to_the_threshold(tmp_path: Path, amounts: tuple[float, float], blocked: bool) -> None:
    debts = [_debt(amounts[0]), _debt(amounts[1], debt_from=date(2024, 2, 1))]
    result = flags(tmp_path, lines=[f.line("A")], debts=debts)
    assert flagged(result, "DEBT_BLOCKED_BILLING") == ({"A": "debt_without_plan"} if blocked else {})
    if blocked:
        evidence = json.loads(result.filter(pl.col("rule_id") == "DEBT_BLOCKED_BILLING")["evidence"][0])
        assert evidence["amount_eur_total"] == round(sum(amounts), 2)
        assert evidence["reference_rows"] == 2
        assert evidence["debt_from"] == "2024-01-01"  # the earliest debt is shown


def test_only_debts_open_that_day_and_without_a_plan_count(tmp_path: Path) -> None:
    debts = [
        _debt(30_000.0),
        _debt(30_000.0, plan_from=date(2024, 1, 1), plan_respected=True),  # repaid as agreed
        _debt(30_000.0, debt_to=date(2024, 3, 15)),  # settled that morning
        _debt(30_000.0, debt_from=date(2024, 3, 16)),  # not yet owed
    ]
    lines = [f.line("A"), f.line("B", service_date=date(2024, 3, 16), submitted_date=date(2024, 3, 16))]
    result = flags(tmp_path, lines=lines, debts=debts)
    # On the 15th only the first debt counts; on the 16th the fourth joins it.
    assert flagged(result, "DEBT_BLOCKED_BILLING") == {"B": "debt_without_plan"}


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

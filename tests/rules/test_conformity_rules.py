"""Boundary cases of the conformity rules (contract v2), from the data contract's own words:
night and weekend windows, nomenclature conformity, providers not entitled to bill."""

from __future__ import annotations

import json
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests import factories as f
from tests.factories import flagged, flags

# NIGHT_WEEKEND_MISCODING -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "outside"),
    [
        (time(20, 59), True),
        (time(21, 0), False),  # start inclusive
        (time(23, 59), False),
        (time(0, 0), False),  # past midnight: the window wraps
        (time(7, 59), False),
        (time(8, 0), True),  # end exclusive
        (time(15, 0), True),
        (None, False),
    ],
)
def test_night_window_wraps_past_midnight(tmp_path: Path, at: time | None, outside: bool) -> None:
    line = f.line("A", nomenclature_code="104230", service_time=at, place_of_service="home", amount_fee=85.0)
    result = flags(tmp_path, lines=[line])
    assert flagged(result, "NIGHT_WEEKEND_MISCODING") == ({"A": "time_outside_window"} if outside else {})
    if outside:
        night = result.filter(pl.col("rule_id") == "NIGHT_WEEKEND_MISCODING")
        assert night["amount_at_stake_eur"].to_list() == [40.0]  # 85.00 night - 45.00 day visit


# The contract's ten legal public holidays, in two years whose movable feasts differ.
HOLIDAYS = {
    2024: ["01-01", "04-01", "05-01", "05-09", "05-20", "07-21", "08-15", "11-01", "11-11", "12-25"],
    2025: ["01-01", "04-21", "05-01", "05-29", "06-09", "07-21", "08-15", "11-01", "11-11", "12-25"],
}
PUBLIC_HOLIDAYS = [date.fromisoformat(f"{year}-{day}") for year, days in HOLIDAYS.items() for day in days]


def _weekend_visit(claim_id: str, day: date) -> dict[str, Any]:
    return f.line(
        claim_id,
        nomenclature_code="104252",
        service_date=day,
        submitted_date=day,
        place_of_service="home",
        amount_fee=60.0,
        patient_id=f"P{claim_id}",
    )


def test_weekend_codes_on_every_public_holiday_pass(tmp_path: Path) -> None:
    lines = [_weekend_visit(f"H{day.isoformat()}", day) for day in PUBLIC_HOLIDAYS]
    assert flagged(flags(tmp_path, lines=lines), "NIGHT_WEEKEND_MISCODING") == {}


@pytest.mark.parametrize(
    ("day", "flagged_"),
    [
        (date(2024, 3, 13), True),  # a Wednesday
        (date(2024, 3, 15), True),  # a Friday
        (date(2024, 3, 16), False),  # Saturday
        (date(2024, 3, 17), False),  # Sunday
        (date(2024, 4, 2), True),  # the day after Easter Monday
        (date(2024, 5, 10), True),  # the day after Ascension
        (date(2025, 5, 9), True),  # 2024's Ascension date, an ordinary Friday in 2025
        (date(2025, 4, 1), True),  # 2024's Easter Monday date, an ordinary Tuesday in 2025
    ],
)
def test_weekend_code_on_an_ordinary_weekday_is_flagged(tmp_path: Path, day: date, flagged_: bool) -> None:
    result = flags(tmp_path, lines=[_weekend_visit("A", day)])
    assert flagged(result, "NIGHT_WEEKEND_MISCODING") == ({"A": "not_weekend_or_holiday"} if flagged_ else {})
    if flagged_:
        night = result.filter(pl.col("rule_id") == "NIGHT_WEEKEND_MISCODING")
        assert night["amount_at_stake_eur"].to_list() == [15.0]  # 60.00 weekend - 45.00 day visit
        assert json.loads(night["evidence"][0])["service_date"] == day.isoformat()


def test_evening_and_day_codes_are_not_held_to_night_or_weekend_windows(tmp_path: Path) -> None:
    lines = [
        f.line("DAY", service_date=date(2024, 3, 13), submitted_date=date(2024, 3, 13), service_time=time(23, 0)),
        f.line("EVE", nomenclature_code="104215", service_time=time(19, 0), place_of_service="home", amount_fee=63.0),
    ]
    assert flagged(flags(tmp_path, lines=lines), "NIGHT_WEEKEND_MISCODING") == {}


# NOMENCLATURE_NONCONFORMITY ----------------------------------------------------------------


def _code(code: str, profession: str, setting: str, valid_from: date, valid_to: date | None = None) -> dict[str, Any]:
    return {
        "code": code,
        "label_fr": "Prestation",
        "label_nl": "Verstrekking",
        "profession": profession,
        "setting": setting,
        "time_window": "any",
        "window_start": None,
        "window_end": None,
        "fee_eur": 31.5,
        "day_equivalent_code": None,
        "valid_from": valid_from,
        "valid_to": valid_to,
    }


NOMENCLATURE = [
    _code("101076", "gp", "office", date(2020, 1, 1)),
    _code("109999", "gp", "any", date(2020, 1, 1)),
    # In force until the end of 2023, then again from June 2024 (a gap of five months).
    _code("108888", "gp", "office", date(2020, 1, 1), date(2023, 12, 31)),
    _code("108888", "gp", "office", date(2024, 6, 1)),
    _code("425014", "nurse", "home", date(2020, 1, 1), date(2023, 12, 31)),
]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, None),
        ({"nomenclature_code": "425014", "place_of_service": "home"}, "profession_not_allowed"),
        ({"place_of_service": "home"}, "setting_mismatch"),
        ({"place_of_service": None}, None),  # no place: nothing to compare
        ({"nomenclature_code": "109999", "place_of_service": "home"}, None),  # setting 'any'
        ({"nomenclature_code": "108888"}, "code_not_in_force"),
        ({"nomenclature_code": "108888", "service_date": date(2023, 12, 31)}, None),  # last day of the first version
        ({"nomenclature_code": "108888", "service_date": date(2024, 6, 1)}, None),  # first day of the second
        ({"nomenclature_code": "108888", "service_date": date(2024, 5, 31)}, "code_not_in_force"),
        # Precedence: profession, then setting, then validity.
        ({"nomenclature_code": "425014", "place_of_service": "office"}, "profession_not_allowed"),
        ({"nomenclature_code": "108888", "place_of_service": "home"}, "setting_mismatch"),
    ],
)
def test_nomenclature_conformity(tmp_path: Path, overrides: dict[str, Any], reason: str | None) -> None:
    day = overrides.get("service_date", date(2024, 3, 15))
    line = f.line("A", **{"submitted_date": day, **overrides})
    result = flags(tmp_path, lines=[line], nomenclature=NOMENCLATURE)
    assert flagged(result, "NOMENCLATURE_NONCONFORMITY") == ({"A": reason} if reason else {})


def test_a_code_out_of_force_is_valid_data_and_its_evidence_names_the_code(tmp_path: Path) -> None:
    line = f.line("A", nomenclature_code="108888")
    result = flags(tmp_path, lines=[line], nomenclature=NOMENCLATURE)  # flags() checks nothing is quarantined
    evidence = json.loads(result.filter(pl.col("rule_id") == "NOMENCLATURE_NONCONFORMITY")["evidence"][0])
    assert evidence == {"nomenclature_code": "108888", "service_date": "2024-03-15"}


# PROVIDER_NOT_ENTITLED ---------------------------------------------------------------------


def test_provider_status_periods_are_inclusive_and_name_the_status(tmp_path: Path) -> None:
    statuses = [
        {
            "provider_nihdi": f.GP,
            "status": "suspended",
            "from_date": date(2024, 3, 1),
            "to_date": date(2024, 3, 31),
            "decision_ref": "CM/1",
        },
        {
            "provider_nihdi": f.GP,
            "status": "visa_withdrawn",
            "from_date": date(2024, 4, 2),
            "to_date": None,
            "decision_ref": None,
        },
    ]
    days = {
        "BEFORE": date(2024, 2, 29),
        "FIRST": date(2024, 3, 1),
        "LAST": date(2024, 3, 31),
        "BETWEEN": date(2024, 4, 1),
        "WITHDRAWN": date(2024, 4, 2),
        "LATER": date(2026, 1, 1),  # an open withdrawal never ends
    }
    lines = [f.line(k, service_date=d, submitted_date=d, patient_id=k) for k, d in days.items()]
    lines.append(f.tp_line("EFACT", "I1", service_date=date(2024, 3, 10), patient_id="T"))
    result = flags(tmp_path, lines=lines, statuses=statuses, invoices=[f.invoice("I1")])
    assert flagged(result, "PROVIDER_NOT_ENTITLED") == {
        "FIRST": "suspended",
        "LAST": "suspended",
        "EFACT": "suspended",  # every channel: the right to bill, not third-party payment
        "WITHDRAWN": "visa_withdrawn",
        "LATER": "visa_withdrawn",
    }
    evidence = json.loads(
        result.filter((pl.col("claim_id") == "FIRST") & (pl.col("rule_id") == "PROVIDER_NOT_ENTITLED"))["evidence"][0]
    )
    assert evidence == {
        "status": "suspended",
        "from_date": "2024-03-01",
        "to_date": "2024-03-31",
        "decision_ref": "CM/1",
    }


def test_another_providers_status_does_not_apply(tmp_path: Path) -> None:
    statuses = [
        {
            "provider_nihdi": f.OTHER_GP,
            "status": "suspended",
            "from_date": date(2024, 1, 1),
            "to_date": None,
            "decision_ref": None,
        }
    ]
    result = flags(tmp_path, lines=[f.line("A")], statuses=statuses)
    assert flagged(result, "PROVIDER_NOT_ENTITLED") == {}


def test_the_day_after_a_status_period_is_free(tmp_path: Path) -> None:
    end = date(2024, 3, 14)
    statuses = [
        {
            "provider_nihdi": f.GP,
            "status": "suspended",
            "from_date": end - timedelta(30),
            "to_date": end,
            "decision_ref": None,
        }
    ]
    assert flagged(flags(tmp_path, lines=[f.line("A")], statuses=statuses), "PROVIDER_NOT_ENTITLED") == {}

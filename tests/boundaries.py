"""Small datasets drawn around the contract's boundaries, shared by the tests that compare two
ways of flagging them (two rule back ends; a run in memory and on Spark).

Deadline day and the day after, 29 February, month ends, window start and end, night windows
past midnight, weekend codes on weekdays and public holidays, gaps of 9 and 10 minutes, times
stamped with the typing minute, debts of 49 999.99 and 50 000 alone or summed, plans five years
on, submissions in a suspension, provider status periods, open periods, ties; with pinned
examples of a burst, a deadline and a debt, and the legislation versions to run them under.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from data_contracts.schemas import CHANNELS, THIRD_PARTY_CHANNELS
from tests import factories as f

# 2024-04-01 is Easter Monday, 2024-03-16 a Saturday.
SERVICE_DATES = [
    date(2023, 3, 15),
    date(2024, 2, 29),
    date(2024, 1, 31),
    date(2023, 12, 1),
    date(2024, 3, 15),
    date(2024, 4, 1),
    date(2024, 3, 16),
]
DELAYS = [0, 1, 29, 31, 60, 365, 366, 730, 731]
TIMES = [None, time(17, 59), time(18, 0), time(20, 59), time(21, 0), time(10, 0), time(7, 59), time(8, 0), time(0, 30)]
MINUTES = [0, 5, 9, 10, 14, 19, 20, 29]
CODES = ["101076", "104215", "101275", "104230", "104252", "425014"]
FEES = {"104215": 63.0, "104230": 85.0, "104252": 60.0}


@st.composite
def lines(draw: st.DrawFn, index: int) -> dict[str, Any]:
    service = draw(st.sampled_from(SERVICE_DATES))
    channel = draw(st.sampled_from(CHANNELS))
    code = draw(st.sampled_from(CODES))
    row: dict[str, Any] = {
        "provider_nihdi": draw(st.sampled_from([f.GP, f.OTHER_GP])),
        "patient_id": draw(st.sampled_from(["P1", "P2"])),
        "nomenclature_code": code,
        "service_date": service,
        "service_time": draw(st.sampled_from(TIMES)),
        "channel": channel,
        "institution_nihdi": draw(st.sampled_from([None, None, "71000001001"])),
    }
    if code in FEES:
        row |= {"amount_fee": FEES[code], "amount_reimbursed": 50.0}
    row["place_of_service"] = draw(st.sampled_from([None, "home", "office"]))
    if code == "104215":
        typed = datetime.combine(service, time(19, 0)) + timedelta(minutes=draw(st.sampled_from(MINUTES)))
        row["encoded_at"] = typed
        if draw(st.booleans()):
            row["service_time"] = typed.time()  # stamped with the typing minute
    if channel in THIRD_PARTY_CHANNELS:
        row |= {"invoice_id": draw(st.sampled_from(["I1", "I2", "I3"])), "submitted_date": None}
    else:
        row["submitted_date"] = service + timedelta(days=draw(st.sampled_from(DELAYS)))
    return f.line(f"C{index:03d}", **row)


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 10))
    submitted = draw(st.sampled_from([date(2024, 3, 31), date(2024, 4, 1), date(2025, 3, 16)]))
    invoices = [
        f.invoice("I1", submitted),
        f.invoice("I2", submitted, number="0499999999"),  # not in the registry
        f.invoice("I3", submitted, number=None),
    ]
    suspensions = draw(
        st.sampled_from(
            [
                [],
                [{"provider_nihdi": f.GP, "start_date": date(2024, 1, 31), "end_date": None, "decision_ref": "S1"}],
                # Invoices submitted on 31 March or 1 April fall in it, for services before.
                [
                    {
                        "provider_nihdi": f.GP,
                        "start_date": date(2024, 3, 20),
                        "end_date": date(2024, 4, 1),
                        "decision_ref": "S2",
                    }
                ],
            ]
        )
    )
    debts = [
        {
            "provider_nihdi": f.OTHER_GP,
            "debt_from": draw(st.sampled_from([date(2023, 12, 1), date(2024, 2, 29)])),
            "debt_to": draw(st.sampled_from([None, date(2024, 2, 29)])),
            "amount_eur": draw(st.sampled_from([49_999.99, 50_000.0, 25_000.0, 24_999.99])),
            "plan_from": draw(st.sampled_from([None, date(2024, 1, 31), date(2019, 2, 28), date(2019, 3, 15)])),
            "plan_respected": draw(st.booleans()),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    statuses = draw(
        st.sampled_from(
            [
                [],
                [
                    {
                        "provider_nihdi": f.GP,
                        "status": "suspended",
                        "from_date": date(2024, 2, 29),
                        "to_date": date(2024, 3, 15),
                        "decision_ref": None,
                    }
                ],
                [
                    {
                        "provider_nihdi": f.OTHER_GP,
                        "status": "visa_withdrawn",
                        "from_date": date(2024, 3, 16),
                        "to_date": None,
                        "decision_ref": "V",
                    }
                ],
            ]
        )
    )
    return {
        "lines": [draw(lines(i)) for i in range(count)],
        "invoices": invoices,
        "suspensions": suspensions,
        "debts": debts,
        "statuses": statuses,
    }


BURST = {
    "lines": [
        f.line(
            f"B{m}",
            nomenclature_code="104215",
            amount_fee=63.0,
            amount_reimbursed=50.0,
            service_time=time(19, 0),
            encoded_at=datetime(2024, 3, 15, 22, m),
            place_of_service="home",
        )
        for m in (0, 9, 18, 28, 37)
    ],
}
DEADLINE = {
    "lines": [
        f.line("D0", service_date=date(2023, 3, 15), submitted_date=date(2025, 3, 15)),
        f.line("D1", service_date=date(2023, 3, 15), submitted_date=date(2025, 3, 16)),
        f.line("D2", service_date=date(2024, 2, 29), submitted_date=date(2025, 3, 1), patient_id="PX"),
    ]
}
DEBT = {
    "lines": [f.line("T0", provider_nihdi=f.OTHER_GP), f.line("T1", provider_nihdi=f.OTHER_GP, patient_id="PY")],
    "debts": [
        {
            "provider_nihdi": f.OTHER_GP,
            "debt_from": date(2024, 3, 15),
            "debt_to": None,
            "amount_eur": 50_000.0,
            "plan_from": None,
            "plan_respected": False,
        }
    ],
}


VERSIONS: list[dict[str, Any]] = [
    {"legislation": "current"},
    {"legislation": "reform_art174"},
    {"legislation": "reform_art174", "effective_from": date(2024, 2, 29)},
]


def on_boundary_datasets(draws: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A test run on ``draws`` datasets drawn by :func:`datasets`, and always on the pinned
    burst, deadline and debt (its argument: ``dataset``)."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        drawn = settings(max_examples=draws, deadline=None, suppress_health_check=[HealthCheck.too_slow])(test)
        for pinned in (DEBT, DEADLINE, BURST):
            drawn = example(dataset=pinned)(drawn)
        return given(dataset=datasets())(drawn)

    return decorate

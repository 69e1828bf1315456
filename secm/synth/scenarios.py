"""Injected, labelled scenarios: every rule with its boundary cases, bad rows for the
quarantine, and anomalous provider profiles.

Scenario lines use fresh patient pseudonyms and day-time codes unless the scenario is about
time, so that each one triggers exactly the rules its label names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import holidays
import numpy as np
import polars as pl

from data_contracts.schemas import THIRD_PARTY_CHANNELS
from secm.synth import anomalies
from secm.synth.billing import Calendar
from secm.synth.population import INSURERS, PSEUDO_NUMBER, Population

RETIRED_CODE = "101032"  # a GP consultation code withdrawn during the first year
BOTH: tuple[str, ...] = ("current", "reform_art174")
REFORM: tuple[str, ...] = ("reform_art174",)
SCENARIO_INSURERS = tuple(INSURERS)  # scenario lines go to each insurer in turn


def _years(d: date, n: int) -> date:
    """Same month and day n years on; 29 February becomes 28 February."""
    try:
        return d.replace(year=d.year + n)
    except ValueError:
        return d.replace(year=d.year + n, day=28)


def _holiday(year: int, name: str) -> date:
    """A Belgian public holiday by its English name, from the holidays calendar."""
    return holidays.country_holidays("BE", years=year, language="en_US").get_named(name, lookup="exact")[0]


def retired_until(first_year: int) -> date:
    """The last day on which :data:`RETIRED_CODE` is in force."""
    return date(first_year, 6, 30)


def with_retired_code(nomenclature: pl.DataFrame, first_year: int) -> pl.DataFrame:
    """The nomenclature plus a code withdrawn in the middle of the first year."""
    template = nomenclature.filter(pl.col("code") == "101076")
    retired = template.with_columns(
        pl.lit(RETIRED_CODE).alias("code"),
        pl.lit("Consultation au cabinet (ancien code)").alias("label_fr"),
        pl.lit("Raadpleging in de spreekkamer (oude code)").alias("label_nl"),
        pl.lit(retired_until(first_year)).alias("valid_to"),
    )
    return pl.concat([nomenclature, retired])


def _next_weekday(d: date, weekday: int) -> date:
    """The first day on or after ``d`` with this weekday (Monday is 0)."""
    return d + timedelta((weekday - d.weekday()) % 7)


def national_number(birth: date, sequence: int) -> str:
    """A well-formed national register number: what ``patient_id`` must never hold."""
    base = int(f"{birth:%y%m%d}{sequence:03d}")
    check = 97 - ((base + (2_000_000_000 if birth.year >= 2000 else 0)) % 97)
    return f"{base:09d}{check:02d}"


def _end_of_month(d: date, k: int) -> date:
    month = d.month - 1 + k + 1
    first_next = date(d.year + month // 12, month % 12 + 1, 1)
    return first_next - timedelta(days=1)


def _place(setting: str) -> str:
    """Where a service of this setting is performed: its own setting, the office for 'any'."""
    return "office" if setting == "any" else setting


@dataclass
class Injection:
    """Lines, invoices and labels of the scenarios, built row by row (a few thousand rows)."""

    claim_offset: int
    fees: dict[str, float]
    settings: dict[str, str]
    tp_numbers: dict[str, str]
    institutions: dict[str, str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def line(
        self,
        provider: str,
        day: date,
        *,
        code: str = "101076",
        channel: str = "eattest",
        at: time | None = time(10, 0),
        submitted: date | None = None,
        encoded_at: datetime | None = None,
        number: str | bool | None = True,
        patient: str | None = None,
        institution: bool = False,
        flags: list[tuple[str, str, tuple[str, ...]]] = (),  # type: ignore[assignment]
        **overrides: Any,
    ) -> str:
        """Add a line (and its own invoice when third-party); return its claim id."""
        claim_id = f"C{self.claim_offset + len(self.lines):011d}"
        fee = self.fees[code]
        insurer = SCENARIO_INSURERS[len(self.lines) % len(SCENARIO_INSURERS)]
        third_party = channel in THIRD_PARTY_CHANNELS
        invoice_id = None
        if third_party:
            invoice_id = f"IS{len(self.invoices):09d}"
            self.invoices.append(
                {
                    "invoice_id": invoice_id,
                    "third_party_number": self.tp_numbers[provider] if number is True else number,
                    "insurer_code": insurer,
                    "submitted_date": submitted or day + timedelta(days=10),
                    "amount_claimed": round(fee * 0.75, 2),
                    "line_count": 1,
                }
            )
        row = {
            "claim_id": claim_id,
            "invoice_id": invoice_id,
            "provider_nihdi": provider,
            "patient_id": patient or f"PSX{len(self.lines):010d}",
            "insurer_code": insurer,
            "nomenclature_code": code,
            "service_date": day,
            "service_time": at,
            "encoded_at": encoded_at,
            "channel": channel,
            "submitted_date": None if third_party else (submitted or day),
            "amount_fee": fee,
            "amount_reimbursed": round(fee * 0.75, 2),
            "place_of_service": "hospital" if institution else _place(self.settings[code]),
            "institution_nihdi": self.institutions[provider] if institution else None,
            "quantity": 1,
        }
        row.update(overrides)
        self.lines.append(row)
        for rule_id, reason, legislations in flags:
            for legislation in legislations:
                self.flags.append(
                    {"claim_id": claim_id, "rule_id": rule_id, "reason": reason, "legislation": legislation}
                )
        return claim_id


@dataclass(frozen=True)
class Plan:
    providers: pl.DataFrame
    registry: pl.DataFrame
    suspensions: pl.DataFrame
    debts: pl.DataFrame
    statuses: pl.DataFrame
    injection: Injection
    scenario_providers: frozenset[str]


def _pick(providers: pl.DataFrame, profession: str, taken: set[str], n: int) -> list[str]:
    candidates = [p for p in providers.filter(pl.col("profession") == profession)["provider_nihdi"] if p not in taken]
    if len(candidates) < n:
        msg = f"Need {n} more '{profession}' providers for the scenarios; generate more lines"
        raise ValueError(msg)
    taken.update(candidates[:n])
    return candidates[:n]


def plan(
    rng: np.random.Generator,
    population: Population,
    calendar: Calendar,
    nomenclature: pl.DataFrame,
    claim_offset: int,
    settings: anomalies.AnomalySettings,
) -> Plan:
    """Choose scenario providers, build the scenario rows, and mark what background must avoid."""
    providers = population.providers
    taken: set[str] = set()
    gp = _pick(providers, "gp", taken, 16)
    nurse = _pick(providers, "nurse", taken, 1)[0]
    specialist = _pick(providers, "specialist", taken, 1)[0]
    numbers = dict(zip(providers["provider_nihdi"], providers["tp_number"], strict=True))
    inj = Injection(
        claim_offset=claim_offset,
        fees=dict(zip(nomenclature["code"], nomenclature["fee_eur"], strict=True)),
        settings=dict(zip(nomenclature["code"], nomenclature["setting"], strict=True)),
        tp_numbers=numbers,
        institutions=dict(zip(providers["provider_nihdi"], providers["institution"], strict=True)),
    )
    y0 = calendar.start.year
    y1 = y0 + 1
    D = date
    registry_extra: list[dict[str, Any]] = []
    gaps: dict[str, tuple[date, date]] = {}
    suspended: dict[str, tuple[date, date]] = {}

    # LATE_ATTESTATION, one provider per regime; boundaries at the deadline and the day after.
    late = "LATE_ATTESTATION"
    leap = D(y1, 2, 29) if y1 % 4 == 0 else D(y0, 2, 28)
    # Deadline day and the day after, for 2 years (current) and 1 year (reform); 29 February too.
    for s, channel in ((D(y0, 3, 15), "paper_cash"), (leap, "eattest")):
        for years, on_time, late_in in ((2, REFORM, BOTH), (1, (), REFORM)):
            deadline = _years(s, years)
            inj.line(gp[0], s, channel=channel, submitted=deadline, flags=[(late, "late_attestation", on_time)])
            inj.line(
                gp[0],
                s,
                channel=channel,
                submitted=deadline + timedelta(1),
                flags=[(late, "late_attestation", late_in)],
            )
    for s in (D(y0, 1, 31), D(y1, 1, 15)):
        eom = _end_of_month(s, 1)
        inj.line(nurse, s, code="425014", channel="efact", submitted=eom)
        inj.line(
            nurse,
            s,
            code="425014",
            channel="efact",
            submitted=eom + timedelta(1),
            flags=[(late, "late_efact_nurse", BOTH)],
        )
    inj.line(gp[1], D(y0, 5, 10), channel="efact", submitted=D(y0, 8, 1))  # not a nurse: 2 years
    for s in (D(y0, 11, 30), D(y0, 12, 31)):
        eom = _end_of_month(s, 2)
        inj.line(gp[1], s, channel="paper_third_party", submitted=eom)
        inj.line(
            gp[1],
            s,
            channel="paper_third_party",
            submitted=eom + timedelta(1),
            flags=[(late, "late_paper_third_party", BOTH)],
        )
    s = D(y0, 6, 1)
    hospital = {"code": "355014", "channel": "efact", "institution": True}
    inj.line(specialist, s, submitted=_years(s, 2), flags=[(late, "late_institution", REFORM)], **hospital)
    inj.line(specialist, s, submitted=_years(s, 2) + timedelta(1), flags=[(late, "late_institution", BOTH)], **hospital)
    inj.line(
        specialist, s, submitted=_years(s, 1) + timedelta(1), flags=[(late, "late_institution", REFORM)], **hospital
    )

    # PSEUDO_TP_NUMBER: missing, unregistered, and registry validity boundaries.
    pseudo = "PSEUDO_TP_NUMBER"
    inj.line(gp[2], D(y0, 4, 4), channel="efact", number=None, flags=[(pseudo, "missing", BOTH)])
    inj.line(gp[2], D(y0, 4, 5), channel="efact", number=PSEUDO_NUMBER, flags=[(pseudo, "unregistered", BOTH)])
    expiring, future = "0398000001", "0398000002"
    registry_extra += [
        {
            "third_party_number": expiring,
            "authorized_nihdi": gp[2],
            "holder_name": "Expired practice",
            "valid_from": D(y0, 1, 1),
            "valid_to": D(y0, 6, 30),
        },
        {
            "third_party_number": future,
            "authorized_nihdi": gp[2],
            "holder_name": "New practice",
            "valid_from": D(y1, 1, 1),
            "valid_to": None,
        },
    ]
    inj.line(gp[2], D(y0, 6, 30), channel="efact", number=expiring)
    inj.line(gp[2], D(y0, 7, 1), channel="efact", number=expiring, flags=[(pseudo, "not_valid_on_date", BOTH)])
    inj.line(
        gp[2], D(y0, 12, 31), channel="paper_third_party", number=future, flags=[(pseudo, "not_valid_on_date", BOTH)]
    )
    inj.line(gp[2], D(y1, 1, 1), channel="paper_third_party", number=future)

    # TP_NUMBER_NOT_AUTHORIZED: another practice's number, and a provider who left a group.
    other = next(p for p in gp[4:] if numbers[p] != numbers[gp[3]])
    unauthorized = "TP_NUMBER_NOT_AUTHORIZED"
    inj.line(
        gp[3],
        D(y0, 8, 8),
        channel="efact",
        number=numbers[other],
        flags=[(unauthorized, "provider_not_authorized", BOTH)],
    )
    shared = "0398000003"
    registry_extra += [
        {
            "third_party_number": shared,
            "authorized_nihdi": gp[3],
            "holder_name": "Group practice",
            "valid_from": D(y0 - 3, 1, 1),
            "valid_to": D(y0, 3, 31),
        },
        {
            "third_party_number": shared,
            "authorized_nihdi": gp[15],
            "holder_name": "Group practice",
            "valid_from": D(y0 - 3, 1, 1),
            "valid_to": None,
        },
    ]
    inj.line(gp[3], D(y0, 3, 31), channel="efact", number=shared)
    inj.line(
        gp[3], D(y0, 4, 1), channel="efact", number=shared, flags=[(unauthorized, "provider_not_authorized", BOTH)]
    )

    # EVENING_VISIT_MISCODING: window boundaries, then bursts typed in after 22:00.
    evening = "EVENING_VISIT_MISCODING"
    for at, flagged in ((time(21, 0), True), (time(17, 59), True), (time(18, 0), False), (time(20, 59), False)):
        inj.line(
            gp[4],
            D(y0, 9, 1),
            code="104215",
            at=at,
            place_of_service="home",
            flags=[(evening, "time_outside_window", BOTH)] if flagged else [],
        )
    inj.line(gp[4], D(y0, 9, 2), code="101275", at=time(21, 30), flags=[(evening, "time_outside_window", BOTH)])
    # Bursts: the software stamped each visit with the minute it was typed (the seed's case),
    # or recorded no time; the times of record are then the typing times.
    bursts = (
        (D(y0, 9, 5), (0, 9, 18), (True, True, True)),
        (D(y0, 9, 6), (0, 10, 20), (False, False, False)),
        (D(y0, 9, 7), (0, 5), (False, False)),
        (D(y0, 9, 8), (0, 10, 15, 20), (False, True, True, True)),
        (D(y1, 3, 3), (0, 0, 9, 17, 26), (True, True, True, True, True)),
    )
    for day, minutes, flagged_lines in bursts:
        for k, (minute, flagged) in enumerate(zip(minutes, flagged_lines, strict=True)):
            typed = datetime.combine(day, time(19, 0)) + timedelta(minutes=minute)
            inj.line(
                gp[4],
                day,
                code="104215",
                at=typed.time() if k % 2 == 0 else None,
                encoded_at=typed,
                flags=[(evening, "batch_encoding", BOTH)] if flagged else [],
            )
    # Genuine times 18:10, 18:50 and 19:30 typed together at 21:30 are no burst; times of
    # record 19:00, 19:05 and 19:08 are one, though typed hours apart the next morning.
    day = D(y0, 9, 12)
    for k, at in enumerate((time(18, 10), time(18, 50), time(19, 30))):
        inj.line(gp[4], day, code="104215", at=at, encoded_at=datetime.combine(day, time(21, 30 + k)))
    day = D(y0, 9, 13)
    for k, at in enumerate((time(19, 0), time(19, 5), time(19, 8))):
        inj.line(
            gp[4],
            day,
            code="104215",
            at=at,
            encoded_at=datetime.combine(day + timedelta(1), time(8 + 2 * k, 0)),
            flags=[(evening, "batch_encoding", BOTH)],
        )

    # NIGHT_WEEKEND_MISCODING: the night window wraps past midnight; weekend codes need a
    # Saturday, a Sunday or a legal public holiday.
    night = "NIGHT_WEEKEND_MISCODING"
    for at, flagged in (
        (time(20, 59), True),
        (time(21, 0), False),
        (time(0, 30), False),
        (time(7, 59), False),
        (time(8, 0), True),
    ):
        inj.line(
            gp[4], D(y0, 10, 2), code="104230", at=at, flags=[(night, "time_outside_window", BOTH)] if flagged else []
        )
    easter_monday = _holiday(y1, "Easter Monday")
    ascension = _holiday(y1, "Ascension Day")
    weekend_days = (
        (D(y0, 10, 4), D(y0, 10, 4).weekday() < 5),
        (_next_weekday(D(y0, 10, 7), 5), False),  # a Saturday
        (easter_monday, False),
        (easter_monday + timedelta(1), True),
        (ascension, False),
        (ascension + timedelta(1), True),
    )
    for day, flagged in weekend_days:
        inj.line(
            gp[4],
            day,
            code="104252",
            at=time(11, 0),
            flags=[(night, "not_weekend_or_holiday", BOTH)] if flagged else [],
        )

    # NOMENCLATURE_NONCONFORMITY: another profession's code, a setting contradicted by the
    # place of service, a code retired before the date of service.
    conformity = "NOMENCLATURE_NONCONFORMITY"
    inj.line(gp[12], D(y0, 10, 20), code="425014", flags=[(conformity, "profession_not_allowed", BOTH)])
    inj.line(gp[12], D(y0, 10, 21), place_of_service="home", flags=[(conformity, "setting_mismatch", BOTH)])
    inj.line(gp[12], retired_until(y0), code=RETIRED_CODE)
    inj.line(
        gp[12], retired_until(y0) + timedelta(1), code=RETIRED_CODE, flags=[(conformity, "code_not_in_force", BOTH)]
    )

    # TP_SUSPENDED_BILLING: a closed and an open suspension (background bills in cash then).
    suspension = "TP_SUSPENDED_BILLING"
    suspended[gp[5]] = (D(y0, 5, 1), D(y0, 6, 30))
    suspended[gp[6]] = (D(y1, 10, 1), D(y1 + 1, 1, 1))
    during = [(suspension, "service_during_suspension", BOTH)]
    for day, flagged in ((D(y0, 4, 30), False), (D(y0, 5, 1), True), (D(y0, 6, 30), True), (D(y0, 7, 1), False)):
        inj.line(gp[5], day, channel="efact", submitted=day, flags=during if flagged else [])
    inj.line(gp[5], D(y0, 5, 20))  # cash during the suspension is allowed
    # An earlier service invoiced during the suspension: the invoice is covered too.
    for submitted, flagged in ((D(y0, 4, 30), False), (D(y0, 5, 1), True), (D(y0, 6, 30), True), (D(y0, 7, 1), False)):
        inj.line(
            gp[5],
            D(y0, 4, 20),
            channel="efact",
            submitted=submitted,
            flags=[(suspension, "invoice_during_suspension", BOTH)] if flagged else [],
        )
    inj.line(gp[6], D(y1, 12, 30), channel="paper_third_party", flags=during)

    # DEBT_BLOCKED_BILLING: threshold, exclusive end, plans in force or not.
    debt = "DEBT_BLOCKED_BILLING"
    blocked = [(debt, "debt_without_plan", BOTH)]
    debts = [
        {
            "provider_nihdi": gp[7],
            "debt_from": D(y1, 7, 1),
            "debt_to": None,
            "amount_eur": 50_000.0,
            "plan_from": None,
            "plan_respected": False,
        },
        {
            "provider_nihdi": gp[8],
            "debt_from": D(y0, 1, 1),
            "debt_to": None,
            "amount_eur": 49_999.99,
            "plan_from": None,
            "plan_respected": False,
        },
        {
            "provider_nihdi": gp[9],
            "debt_from": D(y0, 3, 1),
            "debt_to": D(y0, 9, 1),
            "amount_eur": 75_000.0,
            "plan_from": None,
            "plan_respected": False,
        },
        {
            "provider_nihdi": gp[10],
            "debt_from": D(y0, 2, 1),
            "debt_to": None,
            "amount_eur": 120_000.0,
            "plan_from": D(y0, 5, 1),
            "plan_respected": True,
        },
        {
            "provider_nihdi": gp[11],
            "debt_from": D(y1, 1, 1),
            "debt_to": None,
            "amount_eur": 60_000.0,
            "plan_from": D(y1, 1, 1),
            "plan_respected": False,
        },
    ]
    # A second open debt makes gp[8]'s total reach the threshold; gp[7]'s repayment plan ran
    # out five years after it started.
    debts += [
        {
            "provider_nihdi": gp[8],
            "debt_from": D(y1, 3, 1),
            "debt_to": None,
            "amount_eur": 30_000.0,
            "plan_from": None,
            "plan_respected": False,
        },
        {
            "provider_nihdi": gp[7],
            "debt_from": D(y0 - 6, 1, 1),
            "debt_to": None,
            "amount_eur": 80_000.0,
            "plan_from": D(y0 - 5, 3, 1),
            "plan_respected": True,
        },
    ]
    end = calendar.start + timedelta(calendar.n_days)
    gaps.update(
        {
            gp[7]: (D(y0, 3, 1), end),
            gp[8]: (D(y1, 3, 1), end),
            gp[9]: (D(y0, 3, 1), D(y0, 9, 1)),
            gp[10]: (D(y0, 2, 1), D(y0, 5, 1)),
            gp[11]: (D(y1, 1, 1), end),
        }
    )
    inj.line(gp[7], D(y0, 2, 28))
    inj.line(gp[7], D(y0, 3, 1), flags=blocked)
    inj.line(gp[7], D(y1, 6, 30), flags=blocked)
    inj.line(gp[7], D(y1, 7, 1), flags=blocked)
    inj.line(gp[8], D(y0, 5, 5))
    inj.line(gp[8], D(y1, 2, 28))
    inj.line(gp[8], D(y1, 3, 1), flags=blocked)
    inj.line(gp[9], D(y0, 3, 1), flags=blocked)
    inj.line(gp[9], D(y0, 8, 31), channel="efact", flags=blocked)
    inj.line(gp[9], D(y0, 9, 1))
    inj.line(gp[10], D(y0, 4, 30), flags=blocked)
    inj.line(gp[10], D(y0, 5, 1))
    inj.line(gp[11], D(y1, 1, 1), flags=blocked)

    # PROVIDER_NOT_ENTITLED: a suspended right to practise (closed), a withdrawn visa (open).
    entitled = "PROVIDER_NOT_ENTITLED"
    statuses = [
        {
            "provider_nihdi": gp[13],
            "status": "suspended",
            "from_date": D(y0, 4, 1),
            "to_date": D(y0, 4, 30),
            "decision_ref": f"CM/{y0}/0001",
        },
        {
            "provider_nihdi": gp[14],
            "status": "visa_withdrawn",
            "from_date": D(y1, 11, 1),
            "to_date": None,
            "decision_ref": None,
        },
    ]
    gaps.update({gp[13]: (D(y0, 4, 1), D(y0, 5, 1)), gp[14]: (D(y1, 11, 1), end)})
    for day, reason in (
        (D(y0, 3, 31), None),
        (D(y0, 4, 1), "suspended"),
        (D(y0, 4, 30), "suspended"),
        (D(y0, 5, 1), None),
    ):
        inj.line(
            gp[13],
            day,
            channel="efact",
            submitted=day + timedelta(3),
            flags=[(entitled, reason, BOTH)] if reason else [],
        )
    inj.line(gp[14], D(y1, 10, 31))
    inj.line(gp[14], D(y1, 11, 1), flags=[(entitled, "visa_withdrawn", BOTH)])

    # DUPLICATE_BILLING: the first submitted is kept; ties go to the smallest claim id.
    dup = [("DUPLICATE_BILLING", "duplicate_line", BOTH)]
    day = D(y0, 10, 10)
    inj.line(gp[12], day, patient="PSXDUP0001", submitted=day + timedelta(2), flags=dup)
    inj.line(gp[12], day, patient="PSXDUP0001", submitted=day)
    inj.line(gp[12], day, patient="PSXDUP0002")
    inj.line(gp[12], day, patient="PSXDUP0002", flags=dup)
    inj.line(gp[12], day, patient="PSXDUP0003", at=None, channel="paper_cash", submitted=day + timedelta(5))
    inj.line(gp[12], day, patient="PSXDUP0003", at=None, channel="paper_cash", submitted=day + timedelta(9), flags=dup)
    for k in range(3):
        inj.line(
            gp[12], day, patient="PSXDUP0004", at=time(11, 0), submitted=day + timedelta(k), flags=dup if k else []
        )
    inj.line(gp[12], day, patient="PSXDUP0005", at=time(10, 0))
    inj.line(gp[12], day, patient="PSXDUP0005", at=time(10, 5))
    inj.line(gp[12], day, patient="PSXDUP0006", channel="efact", submitted=day + timedelta(20), flags=dup)
    inj.line(gp[12], day, patient="PSXDUP0006", submitted=day + timedelta(1))

    # Bad rows: each lands in quarantine with the reason its label names.
    def bad(reason: str, **overrides: Any) -> None:
        channel = overrides.pop("channel", "eattest")
        claim = inj.line(gp[13], D(y0, 2, 2), channel=channel, **overrides)
        inj.quarantine.append({"table": "billing_lines", "claim_id": claim, "reason": reason})

    bad("reimbursed_exceeds_fee", amount_reimbursed=99.0)
    bad("invalid_amount_fee", amount_fee=-5.0, amount_reimbursed=0.0)
    bad("unknown_provider", provider_nihdi="19999999999")
    bad("invalid_provider_nihdi", provider_nihdi="1234")
    bad("unknown_nomenclature_code", nomenclature_code="999999")
    bad("invalid_nomenclature_code", nomenclature_code="10107")
    bad("service_after_submission", submitted=D(y0, 2, 1))
    bad("missing_submitted_date", channel="paper_cash", submitted_date=None)
    bad("invalid_channel", channel="fax")
    bad("invalid_insurer_code", insurer_code="1")
    bad("invalid_quantity", quantity=0)
    bad("missing_patient_id", patient_id=None)
    bad("missing_invoice_id", channel="efact", invoice_id=None)
    bad("unknown_invoice", channel="efact", invoice_id="I-UNKNOWN")
    bad("invoice_id_not_allowed", invoice_id=inj.invoices[0]["invoice_id"])
    first = inj.lines[0]["claim_id"]
    bad("duplicate_key", claim_id=first)
    bad("patient_id_not_pseudonymised", patient_id=national_number(date(1985, 7, 30), 33))

    providers = anomalies.assign(rng, _gaps(providers, gaps, suspended, calendar), taken, settings)
    registry = pl.concat([population.registry, pl.DataFrame(registry_extra, schema=population.registry.schema)])
    suspensions = pl.DataFrame(
        [
            {
                "provider_nihdi": p,
                "start_date": a,
                "end_date": None if b >= end else b,
                "decision_ref": f"SECM/{a.year}/{i + 1:04d}",
            }
            for i, (p, (a, b)) in enumerate(suspended.items())
        ],
        schema={"provider_nihdi": pl.String, "start_date": pl.Date, "end_date": pl.Date, "decision_ref": pl.String},
    )
    status_frame = pl.DataFrame(
        statuses,
        schema={
            "provider_nihdi": pl.String,
            "status": pl.String,
            "from_date": pl.Date,
            "to_date": pl.Date,
            "decision_ref": pl.String,
        },
    )
    return Plan(providers, registry, suspensions, pl.DataFrame(debts), status_frame, inj, frozenset(taken))


def _gaps(
    providers: pl.DataFrame,
    gaps: dict[str, tuple[date, date]],
    suspended: dict[str, tuple[date, date]],
    calendar: Calendar,
) -> pl.DataFrame:
    """Per provider, the days background billing must avoid (absences, suspensions)."""

    def offset(d: date) -> int:
        return (d - calendar.start).days

    return providers.with_columns(
        pl.col("provider_nihdi")
        .replace_strict({p: offset(a) for p, (a, _) in gaps.items()}, default=-1, return_dtype=pl.Int64)
        .alias("gap_from"),
        pl.col("provider_nihdi")
        .replace_strict({p: offset(b) for p, (_, b) in gaps.items()}, default=-1, return_dtype=pl.Int64)
        .alias("gap_to"),
        pl.col("provider_nihdi")
        .replace_strict({p: offset(a) for p, (a, _) in suspended.items()}, default=-1, return_dtype=pl.Int64)
        .alias("susp_from"),
        pl.col("provider_nihdi")
        .replace_strict({p: offset(b) for p, (_, b) in suspended.items()}, default=-2, return_dtype=pl.Int64)
        .alias("susp_to"),
    )

"""Profile features on hand-built datasets, with values worked out by hand."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from data_contracts import load_dataset
from detectors.patient_mix import PRIOR
from detectors.profiles import FEATURES, PERIOD_YEAR, counted_median, provider_profiles, sorted_as_pair, with_period
from rules import enriched_lines, evaluate
from tests import factories as f

SATURDAY = date(2024, 3, 16)


def profiles(tmp_path: Path, period: str = "year", **tables: object) -> pl.DataFrame:
    dataset = load_dataset(f.write_dataset(tmp_path, **tables))  # type: ignore[arg-type]
    assert dataset.quarantine.is_empty(), dataset.quarantine.to_dicts()
    lazy = dataset.lazy_tables()
    lines = enriched_lines(lazy)
    flags = evaluate(lazy, lines=lines)
    return provider_profiles(lines, flags, period=period, patients=lazy.get("patients"))  # type: ignore[arg-type]


def test_volume_patients_timing_and_money_features(tmp_path: Path) -> None:
    lines = [
        f.line("A", patient_id="P1", amount_reimbursed=10.0, amount_fee=50.0),
        f.line(
            "B",
            patient_id="P1",
            amount_reimbursed=20.0,
            amount_fee=50.0,
            service_date=SATURDAY,
            submitted_date=date(2024, 3, 26),
        ),
        f.line(
            "C",
            patient_id="P2",
            amount_reimbursed=30.0,
            amount_fee=50.0,
            nomenclature_code="104215",
            service_time=time(19, 0),
            place_of_service="home",
        ),
        f.line(
            "D",
            patient_id="P3",
            amount_reimbursed=40.0,
            amount_fee=50.0,
            service_date=SATURDAY,
            submitted_date=date(2024, 3, 20),
        ),
    ]
    row = profiles(tmp_path, lines=lines).row(0, named=True)
    assert (row["provider_nihdi"], row["period"], row["profession"], row["qualification"]) == (
        f.GP,
        "2024",
        "gp",
        "003",
    )
    expected = {
        "lines": 4,
        "patients": 3,
        "active_days": 2,
        "lines_per_patient": 4 / 3,
        "lines_per_active_day": 2,
        "busiest_day_lines": 2,
        "share_patients_seen_once": 2 / 3,
        "repeat_intensity": 2,
        "evening_share": 0.25,
        "home_visit_share": 0.25,
        "weekend_share": 0.5,
        "amount_per_patient": 100 / 3,
        "amount_per_line": 25,
        "submission_delay_days": 2,  # delays 0, 10, 0, 4 days: median (0 + 4) / 2
        "third_party_share": 0,
        "pseudo_number_rate": 0,
        "rule_hit_rate": 0,
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(value), name
    assert set(FEATURES) <= set(row)


def test_third_party_pseudo_numbers_flags_and_bursts(tmp_path: Path) -> None:
    day = date(2024, 3, 15)
    lines = [
        f.tp_line("A", "I1"),
        f.tp_line("B", "I2"),  # invoice on an unregistered number: pseudo number, flagged
        f.line("C", encoded_at=f.evening_at(day, 20, 0)),
        f.line("D", encoded_at=f.evening_at(day, 20, 5)),  # 5 minutes after C: typed in a burst
    ]
    invoices = [f.invoice("I1"), f.invoice("I2", number="0499999999")]
    row = profiles(tmp_path, lines=lines, invoices=invoices).row(0, named=True)
    assert row["third_party_share"] == pytest.approx(0.5)
    assert row["pseudo_number_rate"] == pytest.approx(0.5)
    assert row["rule_hit_rate"] == pytest.approx(0.25)
    assert row["burst_share"] == pytest.approx(0.5)


def test_a_burst_is_typed_within_minutes_on_one_providers_day_of_service(tmp_path: Path) -> None:
    """Lines typed minutes apart are a burst only for one provider and one day of service."""
    day, later, typed = date(2024, 3, 15), date(2024, 3, 16), datetime(2024, 3, 17, 10, 0)
    sent = {"submitted_date": date(2024, 3, 17)}
    lines = [
        # Two days of service typed four minutes apart: not one day's burst.
        f.line("A", service_date=day, encoded_at=typed, **sent),
        f.line("B", service_date=later, encoded_at=typed + timedelta(minutes=4), **sent),
        # Another provider's line typed between them: a burst of neither.
        f.line("C", provider_nihdi=f.OTHER_GP, service_date=day, encoded_at=typed + timedelta(minutes=2), **sent),
        # One day of service typed four minutes apart: the second line is a burst.
        f.line("D", service_date=day, encoded_at=typed + timedelta(hours=2), **sent),
        f.line("E", service_date=day, encoded_at=typed + timedelta(hours=2, minutes=4), **sent),
    ]
    providers = [f.provider(), f.provider(f.OTHER_GP)]
    rows = {r["provider_nihdi"]: r for r in profiles(tmp_path, lines=lines, providers=providers).iter_rows(named=True)}
    assert rows[f.GP]["burst_share"] == pytest.approx(1 / 4)
    assert rows[f.OTHER_GP]["burst_share"] == 0.0


def test_code_mix_distance_is_zero_for_the_profession_mix_and_grows_away_from_it(tmp_path: Path) -> None:
    lines = [f.line(f"A{i}", nomenclature_code="101076") for i in range(3)]
    lines += [f.line(f"B{i}", provider_nihdi=f.OTHER_GP, nomenclature_code="101135") for i in range(1)]
    providers = [f.provider(), f.provider(f.OTHER_GP)]
    rows = {r["provider_nihdi"]: r for r in profiles(tmp_path, lines=lines, providers=providers).iter_rows(named=True)}
    # Profession mix: 101076 3/4, 101135 1/4. Total variation distance: 1 - sum(min(p, q)).
    assert rows[f.GP]["code_mix_distance"] == pytest.approx(0.25)
    assert rows[f.OTHER_GP]["code_mix_distance"] == pytest.approx(0.75)


def test_quarters_split_a_year(tmp_path: Path) -> None:
    lines = [f.line("A"), f.line("B", service_date=date(2024, 7, 1), submitted_date=date(2024, 7, 1))]
    frame = profiles(tmp_path, period="quarter", lines=lines)
    assert frame["period"].to_list() == ["2024Q1", "2024Q3"]
    assert frame["lines"].to_list() == [1, 1]


def test_high_fee_share_compares_codes_for_the_same_kind_of_service(tmp_path: Path) -> None:
    lines = [f.line(f"A{i}", nomenclature_code="101076") for i in range(2)]
    lines += [f.line("A2", nomenclature_code="101135")]  # the dearer office consultation
    night = {"nomenclature_code": "104230", "service_time": time(23, 0), "place_of_service": "home"}
    lines += [f.line(f"B{i}", provider_nihdi=f.OTHER_GP, patient_id=f"N{i}", **night) for i in range(3)]
    providers = [f.provider(), f.provider(f.OTHER_GP)]
    rows = {r["provider_nihdi"]: r for r in profiles(tmp_path, lines=lines, providers=providers).iter_rows(named=True)}
    # A night home visit is dearer than any office consultation by nature: not an upcoding lead.
    assert rows[f.OTHER_GP]["high_fee_share"] == 0
    assert rows[f.GP]["high_fee_share"] == pytest.approx(1 / 3)


def test_expected_values_for_the_patient_mix_by_indirect_standardisation(tmp_path: Path) -> None:
    home = {"nomenclature_code": "103132", "place_of_service": "home"}
    lines = [
        # GP sees one old, chronically ill patient four times, twice at home.
        *(f.line(f"A{i}", patient_id="P1", **(home if i < 2 else {})) for i in range(4)),
        # The other GP sees a young patient once and a patient the table does not know twice.
        f.line("B0", provider_nihdi=f.OTHER_GP, patient_id="P2"),
        *(f.line(f"C{i}", provider_nihdi=f.OTHER_GP, patient_id="P3", service_time=time(11, i)) for i in range(2)),
    ]
    patients = [
        {
            "patient_id": "P1",
            "birth_year": 1930,
            "sex": "F",
            "preferential_reimbursement": False,
            "chronic_condition": True,
        },
        {
            "patient_id": "P2",
            "birth_year": 1990,
            "sex": "M",
            "preferential_reimbursement": False,
            "chronic_condition": False,
        },
    ]
    rows = {r["provider_nihdi"]: r for r in profiles(tmp_path, lines=lines, patients=patients).iter_rows(named=True)}
    gp, other = rows[f.GP], rows[f.OTHER_GP]

    def shrunk(numerator: float, denominator: float, profession_rate: float) -> float:
        return (numerator + PRIOR * profession_rate) / (denominator + PRIOR)

    # Lines per patient: 7 lines over 3 patients in the profession; P3 counts at that rate.
    per_patient = 7 / 3
    assert gp["expected_lines_per_patient"] == pytest.approx(shrunk(4, 1, per_patient))
    assert other["expected_lines_per_patient"] == pytest.approx((shrunk(1, 1, per_patient) + per_patient) / 2)
    # Home visits: 2 of 7 lines; weighted by each patient's lines.
    home_share = 2 / 7
    assert gp["expected_home_visit_share"] == pytest.approx(shrunk(2, 4, home_share))
    assert other["expected_home_visit_share"] == pytest.approx((shrunk(0, 1, home_share) + 2 * home_share) / 3)
    # Only P3 returns to the other GP: at the profession's rate, 6 lines over 2 returning patients.
    assert other["expected_repeat_intensity"] == pytest.approx(6 / 2)
    assert gp["lines_per_patient"] == 4.0


def test_without_the_patients_table_no_expected_values(tmp_path: Path) -> None:
    frame = profiles(tmp_path, lines=[f.line("A"), f.line("B")])
    assert not [c for c in frame.columns if c.startswith("expected_")]


def _practice(
    nihdi: str, old: int, young: int, visits_old: int, visits_young: int
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Lines and patients of a GP who sees ``old`` old, chronically ill patients ``visits_old``
    times each and ``young`` healthy ones ``visits_young`` times."""
    lines: list[dict[str, object]] = []
    patients: list[dict[str, object]] = []
    for i in range(old + young):
        patient, is_old = f"{nihdi}-{i}", i < old
        patients.append(
            {
                "patient_id": patient,
                "birth_year": 1930 if is_old else 1995,
                "sex": "F",
                "preferential_reimbursement": False,
                "chronic_condition": is_old,
            }
        )
        for visit in range(visits_old if is_old else visits_young):
            lines.append(
                f.line(
                    f"{nihdi}-{i}-{visit}",
                    provider_nihdi=nihdi,
                    patient_id=patient,
                    service_date=date(2024, 3, 1 + visit),
                    submitted_date=date(2024, 3, 1 + visit),
                )
            )
    return lines, patients


def test_the_same_behaviour_with_another_patient_mix_gets_the_same_adjusted_indicator(tmp_path: Path) -> None:
    third = "10007777005"
    practices = [
        _practice(f.GP, old=300, young=100, visits_old=3, visits_young=1),  # mostly old patients
        _practice(f.OTHER_GP, old=100, young=300, visits_old=3, visits_young=1),  # mostly young ones
        _practice(third, old=300, young=100, visits_old=6, visits_young=2),  # as the first, twice as often
    ]
    lines = [line for practice_lines, _ in practices for line in practice_lines]
    patients = [patient for _, practice_patients in practices for patient in practice_patients]
    providers = [f.provider(), f.provider(f.OTHER_GP), f.provider(third)]
    frame = profiles(tmp_path, lines=lines, patients=patients, providers=providers)
    ratio = {
        r["provider_nihdi"]: r["lines_per_patient"] / r["expected_lines_per_patient"]
        for r in frame.iter_rows(named=True)
    }
    raw = {r["provider_nihdi"]: r["lines_per_patient"] for r in frame.iter_rows(named=True)}
    # Raw, the first GP bills 2.5 lines per patient and the second 1.5; adjusted, they are alike.
    assert raw[f.GP] == pytest.approx(2.5)
    assert raw[f.OTHER_GP] == pytest.approx(1.5)
    assert ratio[f.GP] == pytest.approx(ratio[f.OTHER_GP], rel=0.03)
    # The same patient mix seen twice as often is not alike.
    assert ratio[third] > 1.6 * ratio[f.GP]


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2**32 - 1, 2**63, 2**64 - 1]),
            st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2199, 12, 31)),
        ),
        max_size=40,
    )
)
@example([(1, datetime(1970, 1, 1, 0, 30)), (1, datetime(1969, 12, 31, 23, 50)), (0, datetime(2024, 1, 1))])
def test_one_number_sorts_as_a_day_and_a_typing_time_do(pairs: list[tuple[int, datetime]]) -> None:
    """Before 1970 too: a time's 64 bits, read as unsigned, would put it after every later time."""
    frame = pl.DataFrame(pairs, schema={"day": pl.UInt64, "at": pl.Datetime("us")}, orient="row")
    by_number = frame.sort(sorted_as_pair(pl.col("day"), pl.col("at")))
    assert by_number.rows() == frame.sort("day", "at").rows()


@given(st.lists(st.one_of(st.none(), st.dates(date(1900, 1, 1), date(2199, 12, 31))), max_size=30))
def test_a_period_number_gives_the_year_and_quarter_of_its_date(days: list[date | None]) -> None:
    frame = pl.DataFrame({"service_date": days}, schema={"service_date": pl.Date})
    by_year, by_quarter = (with_period(frame, grain) for grain in ("year", "quarter"))  # type: ignore[arg-type]
    years = [d.year if d else None for d in days]
    assert by_year.select(PERIOD_YEAR).to_series().to_list() == years
    assert by_quarter.select(PERIOD_YEAR).to_series().to_list() == years
    quarters = [(d.month - 1) // 3 + 1 if d else None for d in days]
    assert by_quarter.select(pl.col("period") % 10).to_series().to_list() == quarters


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.one_of(st.none(), st.integers(-400, 400)), st.integers(1, 5)),
        min_size=1,
        max_size=40,
    )
)
@example([("a", None, 2)])  # a group with no value has no median
@example([("a", 1, 1), ("a", 4, 1)])  # two middle values: their mean
def test_a_median_read_from_counts_is_the_median_of_the_lines_counted(rows: list[tuple[str, int | None, int]]) -> None:
    counted = pl.DataFrame(rows, schema={"g": pl.String, "v": pl.Int64, "_n": pl.UInt32}, orient="row")
    lines = counted.select("g", pl.col("v").repeat_by("_n")).explode("v").drop_nulls("v")
    expected = dict(lines.group_by("g").agg(pl.col("v").median()).iter_rows())
    assert dict(counted_median(counted.lazy(), ["g"], "v", "m").collect().iter_rows()) == expected

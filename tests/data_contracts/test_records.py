"""Single records validated in plain Python give the loader's verdict, reason for reason."""

from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from data_contracts import TABLES, load_dataset
from data_contracts.loader import load_records
from data_contracts.records import Known, Verdict, validate_records
from tests import factories as f
from tests.data_contracts.test_loader import BAD_LINES, POSTED_ONLY


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    root = tmp_path_factory.mktemp("records") / "data"
    return load_dataset(f.write_dataset(root, lines=[f.line("OK1")], invoices=[f.invoice("INV1")])).tables


def _known(references: dict[str, pl.DataFrame]) -> Known:
    invoices = references["third_party_invoices"].select("invoice_id", "submitted_date").iter_rows()
    return Known(
        frozenset(references["providers"]["provider_nihdi"]),
        frozenset(references["nomenclature"]["code"]),
        dict(invoices),
    )


def _as_text(table: str, records: list[dict[str, Any]]) -> list[dict[str, str | None]]:
    return [{c: None if r.get(c) is None else str(r[c]) for c in TABLES[table].dtypes} for r in records]


def _assert_as_loader(table: str, text: list[dict[str, str | None]], references: dict[str, pl.DataFrame]) -> Verdict:
    spec = TABLES[table]
    frame = pl.DataFrame(text, schema=dict.fromkeys(spec.dtypes, pl.String))
    valid, quarantine, _ = load_records(spec, frame, references)
    verdict = validate_records(spec, text, _known(references))
    assert verdict is not None, "every value here is written the usual way"
    assert verdict.quarantined == list(zip(quarantine["row_number"], quarantine["reasons"].to_list(), strict=True))
    assert_frame_equal(pl.DataFrame(verdict.valid, schema=spec.dtypes), valid)
    return verdict


def test_the_contracts_bad_lines_get_the_loaders_reasons_in_its_order(references: dict[str, pl.DataFrame]) -> None:
    records = [{**f.line(f"BAD{i}"), **change} for i, (_, change, _) in enumerate(BAD_LINES)]
    records += [
        f.line("OK2", quantity=None),  # valid, quantity 1 by default
        f.line("OK2", patient_id="again"),  # a duplicate claim id
        f.line("NOCHANNEL", channel=None, invoice_id="INV1", submitted_date=None),  # one reason, not four
        f.line("NN", patient_id="85073003328", amount_reimbursed=99.0),  # two reasons
        f.line("DAYFIRST", service_date="15/03/2024", submitted_date=" 2024-03-15 ", service_time="10:00:00"),
    ]
    verdict = _assert_as_loader("billing_lines", _as_text("billing_lines", records), references)
    reasons = dict(verdict.quarantined)
    for row, (case, _, reason) in enumerate(BAD_LINES, start=1):
        assert reason in reasons[row], case
    assert [r["claim_id"] for r in verdict.valid] == ["OK2", "DAYFIRST"]
    assert verdict.valid[0]["quantity"] == 1


def test_invoices_get_the_loaders_reasons(references: dict[str, pl.DataFrame]) -> None:
    records = [
        f.invoice("I1"),
        f.invoice("I1"),
        {**f.invoice("I2"), "insurer_code": "1"},
        {**f.invoice("I3"), "amount_claimed": -1},
        {**f.invoice("I4"), "line_count": None},
    ]
    verdict = _assert_as_loader("third_party_invoices", _as_text("third_party_invoices", records), references)
    assert [reasons for _, reasons in verdict.quarantined] == [
        ["duplicate_key"],
        ["invalid_insurer_code"],
        ["invalid_amount_claimed"],
        ["missing_line_count"],
    ]


@pytest.mark.parametrize(("case", "change", "reason"), POSTED_ONLY)
def test_malformed_values_are_left_to_the_loader(
    references: dict[str, pl.DataFrame], case: str, change: dict[str, Any], reason: str
) -> None:
    text = _as_text("billing_lines", [{**f.line("A"), **change}])
    if reason.startswith("malformed_"):  # the loader's parsers say which values did not parse
        assert validate_records(TABLES["billing_lines"], text, _known(references)) is None, case
    else:
        assert _assert_as_loader("billing_lines", text, references).quarantined == [(1, [reason])], case


# Values of each column written the usual way, valid and not: any mix is decided, as the loader decides.
USUAL: dict[str, list[Any]] = {
    "claim_id": ["C1", "C2", " C1", None, ""],
    "invoice_id": [None, "INV1", "NOPE", "  "],
    "provider_nihdi": [f.GP, f.NURSE, "1234", "19999999999", None],
    "patient_id": ["P1", "85073003328", "00012556777", None],
    "insurer_code": ["100", "10", "abc", None],
    "nomenclature_code": ["101076", "999999", "10107", None],
    "service_date": [date(2024, 3, 15), "15/03/2024", date(2024, 4, 11), None],
    "service_time": [None, "10:00", "23:59:59"],
    "encoded_at": [None, "2024-03-15 10:00", "2024-03-15T10:00:05"],
    "channel": ["eattest", "efact", "paper_cash", "paper_third_party", "fax", None],
    "submitted_date": [date(2024, 3, 15), None, date(2024, 3, 14), "2199-12-31"],
    "amount_fee": [31.5, "0", "-1", None, ".5", "1."],
    "amount_reimbursed": [23.63, "31.51", "0.0", None, "+2"],
    "place_of_service": ["office", None, "car", "home"],
    "institution_nihdi": [None, "71000000001", "7100"],
    "quantity": [1, None, "0", "2", "-3"],
    "software_id": [None, "ACME", " "],
}
# Values the loader's parsers must judge (malformed, or another way of writing).
UNUSUAL: dict[str, list[Any]] = {
    "service_date": ["2024-02-30", "1899-12-31", "2024-3-15"],
    "service_time": ["7:00", "25:61", "10:00:00.5"],
    "encoded_at": ["1899-12-31 10:00", "2024-03-15 10:00:00.123"],
    "amount_fee": ["1e3", "inf", "1,5"],
    "quantity": ["1.5", "1.0"],
    "software_id": ["\ufffd"],
}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _records(values: dict[str, list[Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(st.fixed_dictionaries({c: st.sampled_from(v) for c, v in values.items()}), min_size=1, max_size=6)


@SETTINGS
@given(_records(USUAL))
def test_any_mix_of_usual_values_is_decided_as_the_loader_decides(
    references: dict[str, pl.DataFrame], records: list[dict[str, Any]]
) -> None:
    _assert_as_loader("billing_lines", _as_text("billing_lines", records), references)


@SETTINGS
@given(_records(USUAL), st.data())
def test_one_unusual_value_leaves_the_records_to_the_loader(
    references: dict[str, pl.DataFrame], records: list[dict[str, Any]], data: st.DataObject
) -> None:
    column = data.draw(st.sampled_from(sorted(UNUSUAL)))
    records[-1][column] = data.draw(st.sampled_from(UNUSUAL[column]))
    assert validate_records(TABLES["billing_lines"], _as_text("billing_lines", records), _known(references)) is None


def test_billing_lines_need_what_they_refer_to() -> None:
    with pytest.raises(ValueError, match="refer to"):
        validate_records(TABLES["billing_lines"], [], None)


def test_national_numbers_are_recognised_as_the_loader_does() -> None:
    from data_contracts.parsers import is_national_number, looks_like_national_number

    values = ["85073003328", "00012556777", "00012556778", "8507300332", "850730033280", "P1234567890", "٨٥٠٧٣٠٠٣٣٢٨"]
    polars = pl.Series(values).to_frame("v").select(looks_like_national_number(pl.col("v"))).to_series().to_list()
    assert [is_national_number(v) for v in values] == polars
    assert polars[:3] == [True, True, False]


def test_invoices_need_no_reference_table() -> None:
    verdict = validate_records(TABLES["third_party_invoices"], _as_text("third_party_invoices", [f.invoice("I")]), None)
    assert verdict is not None
    assert [v["invoice_id"] for v in verdict.valid] == ["I"]

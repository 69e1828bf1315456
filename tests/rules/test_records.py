"""Lines enriched one by one from in-memory indexes equal the Polars enrichment, column for column."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts import load_dataset
from rules import evaluate, load_catalog
from rules.catalog import Catalog, DuplicateKeyCheck
from rules.context import enrich
from rules.records import ReferenceIndex, bearing_on, bearing_same_day
from secm.synth import generate
from tests import factories as f


def _assert_enriched_alike(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    want = enrich({name: frame.lazy() for name, frame in tables.items()})
    invoices = tables["third_party_invoices"].select("invoice_id", "third_party_number", "submitted_date")
    found = {invoice: (number, submitted) for invoice, number, submitted in invoices.iter_rows()}
    got = ReferenceIndex(tables).enrich(tables["billing_lines"].to_dicts(), found)
    assert_frame_equal(got, want, categorical_as_str=True)
    return want


def test_generated_data_is_enriched_alike(synthetic: Path) -> None:
    enriched = _assert_enriched_alike(load_dataset(synthetic).tables)
    third_party = enriched.filter("is_third_party")
    assert set(third_party["tp_status"].cast(pl.String)) >= {"ok", "unregistered", "not_valid_on_date", "missing"}
    assert set(enriched["code_in_force"]) == {True, False}  # a retired code is billed too


def test_data_made_with_other_settings_is_enriched_alike(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate(root, n_lines=8_000, seed=29, first_year=2021, years=3, n_providers=120)
    _assert_enriched_alike(load_dataset(root).tables)


def test_edge_cases_are_enriched_alike(tmp_path: Path) -> None:
    """Windows past midnight, missing times, the typing stamp, versions of a code, the registry."""
    nomenclature = [
        {"code": "101076", "profession": "gp", "setting": "office", "time_window": "any", "fee_eur": 31.5,
         "valid_from": date(2020, 1, 1), "valid_to": date(2024, 3, 14)},
        {"code": "101076", "profession": "gp", "setting": "any", "time_window": "any", "fee_eur": 33.0,
         "valid_from": date(2024, 3, 16)},
        {"code": "101275", "profession": "gp", "setting": "office", "time_window": "evening", "fee_eur": 41.0,
         "window_start": time(18), "window_end": time(21), "day_equivalent_code": "101076",
         "valid_from": date(2020, 1, 1)},
        {"code": "103990", "profession": "gp", "setting": "home", "time_window": "night", "fee_eur": 90.0,
         "window_start": time(21), "window_end": time(8), "day_equivalent_code": "103110",
         "valid_from": date(2020, 1, 1)},
        {"code": "103110", "profession": "gp", "setting": "home", "time_window": "day", "fee_eur": 40.5,
         "valid_from": date(2020, 1, 1)},
    ]  # fmt: skip
    lines = [
        f.line("NOT_IN_FORCE"),
        f.line("IN_FORCE", service_date=date(2024, 3, 16), submitted_date=date(2024, 3, 16)),
        f.line("EVENING_IN", nomenclature_code="101275", service_time=time(19, 30)),
        f.line("EVENING_OUT", nomenclature_code="101275", service_time=time(17, 59)),
        f.line("NO_TIME", nomenclature_code="101275", service_time=None),
        f.line("NIGHT_LATE", nomenclature_code="103990", service_time=time(23, 0)),
        f.line("NIGHT_EARLY", nomenclature_code="103990", service_time=time(7, 59)),
        f.line("NIGHT_DAY", nomenclature_code="103990", service_time=time(12, 0)),
        f.line("STAMPED", service_time=time(19, 30), encoded_at=datetime(2024, 3, 15, 19, 30, 42)),
        f.line("TYPED_ONLY", service_time=None, encoded_at=datetime(2024, 3, 16, 8, 1)),
        f.line("OLD_STAMP", service_time=time(9, 0), encoded_at=datetime(1960, 1, 1, 9, 0)),
        f.line("SUNDAY", service_date=date(2024, 3, 17), submitted_date=date(2024, 3, 17)),
        f.line("EASTER_MONDAY", service_date=date(2024, 4, 1), submitted_date=date(2024, 4, 1)),
        f.tp_line("TP_OK", "INV1"),
        f.tp_line("TP_OTHER", "INV1", provider_nihdi=f.OTHER_GP),
        f.tp_line("TP_EXPIRED", "INV1", service_date=date(2019, 6, 1)),
        f.tp_line("TP_UNREGISTERED", "INV2"),
        f.tp_line("TP_MISSING", "INV3"),
    ]
    invoices = [f.invoice("INV1"), f.invoice("INV2", number="0499999999"), f.invoice("INV3", number=None)]
    registry = [
        f.registry(),
        f.registry(nihdi=f.NURSE),
        f.registry(valid_from=date(2018, 1, 1), valid_to=date(2018, 12, 31)),
    ]
    root = f.write_dataset(
        tmp_path / "data", lines=lines, invoices=invoices, registry_rows=registry, nomenclature=nomenclature
    )
    dataset = load_dataset(root)
    assert dataset.quarantine.is_empty(), dataset.quarantine.to_dicts()
    enriched = _assert_enriched_alike(dataset.tables)
    status = dict(zip(enriched["claim_id"], enriched["tp_status"].cast(pl.String), strict=True))
    assert [status[c] for c in ("TP_OK", "TP_OTHER", "TP_EXPIRED", "TP_UNREGISTERED", "TP_MISSING")] == [
        "ok",
        "not_authorized",
        "not_valid_on_date",
        "unregistered",
        "missing",
    ]
    window = dict(zip(enriched["claim_id"], enriched["service_in_window"], strict=True))
    assert [window[c] for c in ("EVENING_IN", "EVENING_OUT", "NO_TIME", "NIGHT_LATE", "NIGHT_EARLY", "NIGHT_DAY")] == [
        True,
        False,
        None,
        True,
        True,
        False,
    ]


def test_a_line_of_an_unknown_provider_is_refused(synthetic: Path) -> None:
    tables = load_dataset(synthetic).tables
    line = {**tables["billing_lines"].row(0, named=True), "provider_nihdi": "19999999999"}
    with pytest.raises(KeyError):
        ReferenceIndex(tables).enrich([line], {})


def test_the_lines_bearing_on_posted_claims_give_them_the_same_flags(synthetic: Path) -> None:
    """Duplicates and bursts need their group's other lines; every other rule reads one line."""
    tables = load_dataset(synthetic).tables
    lazy = {name: frame.lazy() for name, frame in tables.items()}
    everything = evaluate(lazy)
    flagged = everything.filter(pl.col("rule_id").is_in(["DUPLICATE_BILLING", "EVENING_VISIT_MISCODING"]))
    posted = set(flagged["claim_id"].head(40)) | set(tables["billing_lines"]["claim_id"].gather_every(500))
    lines = tables["billing_lines"].to_dicts()
    bearing = bearing_on(load_catalog(), lines, posted)
    assert len(posted) < len(bearing) < len(lines) / 10
    few = evaluate({**lazy, "billing_lines": pl.DataFrame(bearing, schema=tables["billing_lines"].schema).lazy()})
    mine = pl.col("claim_id").is_in(list(posted))
    assert_frame_equal(few.filter(mine), everything.filter(mine))
    assert set(flagged["rule_id"]) == {"DUPLICATE_BILLING", "EVENING_VISIT_MISCODING"}
    # Each is its provider's on a posted line's day: the history gives no other.
    days = {(line["provider_nihdi"], line["service_date"]) for line in lines if line["claim_id"] in posted}
    assert bearing_same_day(load_catalog())
    assert {(line["provider_nihdi"], line["service_date"]) for line in bearing} == days


@pytest.mark.parametrize("key", [["patient_id", "nomenclature_code"], ["region"]])  # no day; an enriched column
def test_lines_of_other_days_may_bear_when_a_key_does_not_hold_the_day(key: list[str]) -> None:
    assert not bearing_same_day(_with_duplicate_key(key))


def _with_duplicate_key(key: list[str]) -> Catalog:
    """The shipped catalog with the duplicate rule's key replaced by ``key``."""
    catalog = load_catalog()
    rules = [
        rule.model_copy(update={"checks": [check.model_copy(update={"key": key})]})
        if isinstance(check := rule.checks[0], DuplicateKeyCheck)
        else rule
        for rule in catalog
    ]
    return catalog.model_copy(update={"rules": rules})


def test_a_key_on_an_enriched_column_keeps_every_line(synthetic: Path) -> None:
    lines = load_dataset(synthetic).tables["billing_lines"].head(100).to_dicts()
    assert bearing_on(_with_duplicate_key(["region"]), lines, {lines[0]["claim_id"]}) == lines
    assert len(bearing_on(load_catalog(), lines, {lines[0]["claim_id"]})) < len(lines)

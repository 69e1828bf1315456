from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_contracts import TABLES, DatasetNotFoundError, MissingColumnError, MissingTableError, load_dataset
from data_contracts.keys import repeated_hashes
from data_contracts.loader import WITHHELD, files_of, load_files, load_records, validate
from data_contracts.partitions import FILE_COLUMN, typed_lines
from data_contracts.reader import BEYOND_HEADER, SourceFile, scan_files
from data_contracts.schemas import billing_lines_repeating_only
from secm.synth.scenarios import national_number
from tests import factories as f


def _reasons_by_claim(quarantine: pl.DataFrame) -> dict[str, list[str]]:
    lines = quarantine.filter(pl.col("table") == "billing_lines")
    return {json.loads(raw)["claim_id"]: reasons for raw, reasons in lines.select("raw_values", "reasons").iter_rows()}


def _assert_reconciled(dataset: Any) -> None:
    for name, stats in dataset.stats.items():
        assert stats.rows_read == stats.rows_valid + stats.rows_quarantined, name
        assert stats.rows_valid == dataset.tables[name].height, name
        assert stats.rows_quarantined == dataset.quarantine.filter(pl.col("table") == name).height, name


BAD_LINES: list[tuple[str, dict[str, Any], str]] = [
    ("missing claim id", {"claim_id": None}, "missing_claim_id"),
    ("short NIHDI", {"provider_nihdi": "1234"}, "invalid_provider_nihdi"),
    ("unknown provider", {"provider_nihdi": "19999999999"}, "unknown_provider"),
    ("missing patient", {"patient_id": None}, "missing_patient_id"),
    ("two-digit insurer", {"insurer_code": "10"}, "invalid_insurer_code"),
    ("five-digit code", {"nomenclature_code": "10107"}, "invalid_nomenclature_code"),
    ("unknown code", {"nomenclature_code": "999999"}, "unknown_nomenclature_code"),
    ("no service date", {"service_date": None}, "missing_service_date"),
    ("unknown channel", {"channel": "fax"}, "invalid_channel"),
    ("cash without submission", {"submitted_date": None}, "missing_submitted_date"),
    ("negative fee", {"amount_fee": -1.0, "amount_reimbursed": 0.0}, "invalid_amount_fee"),
    ("negative reimbursement", {"amount_reimbursed": -0.01}, "invalid_amount_reimbursed"),
    ("reimbursed above fee", {"amount_reimbursed": 31.51}, "reimbursed_exceeds_fee"),
    ("unknown place", {"place_of_service": "car"}, "invalid_place_of_service"),
    ("bad institution", {"institution_nihdi": "7100"}, "invalid_institution_nihdi"),
    ("zero quantity", {"quantity": 0}, "invalid_quantity"),
    ("service after submission", {"submitted_date": date(2024, 3, 14)}, "service_after_submission"),
    ("cash line with an invoice", {"invoice_id": "INV1"}, "invoice_id_not_allowed"),
    ("third-party without invoice", {"channel": "efact", "submitted_date": None}, "missing_invoice_id"),
    ("unknown invoice", {"channel": "efact", "submitted_date": None, "invoice_id": "NOPE"}, "unknown_invoice"),
    (
        "third-party served after its invoice",
        {"channel": "efact", "submitted_date": None, "invoice_id": "INV1", "service_date": date(2024, 4, 11)},
        "service_after_submission",
    ),
]


@pytest.mark.parametrize(("case", "change", "reason"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_line_lands_in_quarantine_with_its_reason(
    tmp_path: Path, case: str, change: dict[str, Any], reason: str
) -> None:
    bad = {**f.line("BAD"), **change}
    root = f.write_dataset(tmp_path, lines=[f.line("OK1"), bad, f.line("OK2")], invoices=[f.invoice("INV1")])
    dataset = load_dataset(root)
    quarantined = dataset.quarantine.filter(pl.col("table") == "billing_lines")
    assert quarantined.height == 1
    assert reason in quarantined["reasons"][0].to_list()
    assert quarantined["row_number"][0] == 2
    assert dataset.tables["billing_lines"]["claim_id"].to_list() == ["OK1", "OK2"]
    _assert_reconciled(dataset)


def test_duplicate_claim_quarantines_every_row_after_the_first_read(tmp_path: Path) -> None:
    rows = [f.line("A", patient_id="first"), f.line("A", patient_id="second"), f.line("A", patient_id="third")]
    dataset = load_dataset(f.write_dataset(tmp_path, lines=rows))
    assert dataset.tables["billing_lines"]["patient_id"].to_list() == ["first"]
    quarantined = dataset.quarantine.filter(pl.col("table") == "billing_lines")
    assert quarantined["row_number"].to_list() == [2, 3]
    assert all(r.to_list() == ["duplicate_key"] for r in quarantined["reasons"])
    _assert_reconciled(dataset)


@pytest.mark.parametrize(
    ("table", "rows", "reason"),
    [
        ("providers", [f.provider(), f.provider()], "duplicate_key"),
        ("providers", [f.provider(), f.provider(f.OTHER_GP, profession="surgeon")], "invalid_profession"),
        ("providers", [f.provider(), f.provider(f.OTHER_GP, region="NL")], "invalid_region"),
        ("providers", [f.provider(), f.provider(f.OTHER_GP, postcode="12345")], "invalid_postcode"),
        ("third_party_invoices", [f.invoice("INV1"), f.invoice("INV1")], "duplicate_key"),
        (
            "third_party_registry",
            [f.registry(valid_from=date(2024, 1, 1), valid_to=date(2023, 1, 1))],
            "period_ends_before_start",
        ),
    ],
)
def test_bad_reference_rows_are_quarantined(
    tmp_path: Path, table: str, rows: list[dict[str, Any]], reason: str
) -> None:
    kwargs: dict[str, Any] = {"lines": [f.line("OK1")]}
    kwargs[
        {"providers": "providers", "third_party_invoices": "invoices", "third_party_registry": "registry_rows"}[table]
    ] = rows
    dataset = load_dataset(f.write_dataset(tmp_path, **kwargs))
    quarantined = dataset.quarantine.filter(pl.col("table") == table)
    assert quarantined.height == 1
    assert reason in quarantined["reasons"][0].to_list()
    _assert_reconciled(dataset)


def test_lines_of_a_quarantined_provider_are_unknown_provider(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A")], providers=[f.provider(postcode="ABCD")])
    reasons = _reasons_by_claim(load_dataset(root).quarantine)
    assert reasons == {"A": ["unknown_provider"]}


def _csv_text(frame: pl.DataFrame, separator: str, decimal_comma: bool) -> str:
    """The frame as a CSV of the other dialect: DD/MM/YYYY dates, HH:MM times, T datetimes."""
    out = frame.with_columns(
        [pl.col(c).dt.strftime("%d/%m/%Y") for c, t in frame.schema.items() if t == pl.Date]
        + [pl.col(c).dt.strftime("%H:%M") for c, t in frame.schema.items() if t == pl.Time]
        + [pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S") for c, t in frame.schema.items() if isinstance(t, pl.Datetime)]
        + [
            pl.col(c).cast(pl.String).str.replace(".", ",", literal=True) if decimal_comma else pl.col(c)
            for c, t in frame.schema.items()
            if t == pl.Float64
        ]
    )
    return "\ufeff" + out.write_csv(separator=separator)


@pytest.mark.parametrize(("separator", "decimal_comma"), [(",", False), (";", True), (";", False)])
def test_csv_dialects_and_partitions_load_like_parquet(tmp_path: Path, separator: str, decimal_comma: bool) -> None:
    lines = [
        f.line("A", encoded_at=f.evening_at(date(2024, 3, 15), 10, 5), amount_fee=31.5, amount_reimbursed=23.63),
        f.line("B", service_time=None, quantity=None, amount_reimbursed=0.0),
        f.tp_line("C", "INV1", service_date=date(2024, 2, 29)),
        f.line("D", amount_reimbursed=99.0),  # quarantined the same way in every dialect
    ]
    parquet = f.write_dataset(tmp_path / "parquet", lines=lines, invoices=[f.invoice("INV1")])
    csv = tmp_path / "csv"
    shutil.copytree(parquet, csv)
    frame = pl.read_parquet(parquet / "billing_lines.parquet")
    (csv / "billing_lines.parquet").unlink()
    (csv / "billing_lines").mkdir()
    for part, rows in enumerate((frame.slice(0, 2), frame.slice(2, 2))):
        (csv / "billing_lines" / f"part-{part}.csv").write_text(
            _csv_text(rows, separator, decimal_comma), encoding="utf-8"
        )
    expected, got = load_dataset(parquet), load_dataset(csv)
    for name in expected.tables:
        assert_frame_equal(got.tables[name], expected.tables[name], check_dtypes=True)
    assert got.quarantine["reasons"].to_list() == expected.quarantine["reasons"].to_list()
    assert got.stats["billing_lines"].rows_read == 4
    _assert_reconciled(got)


def test_malformed_csv_values_are_quarantined_not_fatal(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A")])
    (root / "billing_lines.parquet").unlink()
    header = "claim_id;provider_nihdi;patient_id;insurer_code;nomenclature_code;service_date;service_time;channel;submitted_date;amount_fee;amount_reimbursed;encoded_at\n"
    rows = [
        f"A;{f.GP};P1;100;101076;15/03/2024;10:00;eattest;2024-03-15;31,50;23,63;2024-03-15 10:05\n",
        f"B;{f.GP};P2;100;101076;30/02/2024;10:00;eattest;2024-03-15;31,50;23,63;\n",
        f"C;{f.GP};P3;100;101076;2024-03-15;25:00;eattest;2024-03-15;abc;23,63;yesterday\n",
        f"D;{f.GP};P4;100;101076;2024-03-15;;eattest;2024-03-15;1e3;0;\n",
    ]
    (root / "billing_lines.csv").write_text(header + "".join(rows), encoding="utf-8")
    dataset = load_dataset(root)
    reasons = _reasons_by_claim(dataset.quarantine)
    assert reasons["B"] == ["malformed_service_date"]
    assert sorted(reasons["C"]) == ["malformed_amount_fee", "malformed_encoded_at", "malformed_service_time"]
    assert reasons["D"] == ["malformed_amount_fee"]
    assert dataset.tables["billing_lines"]["amount_fee"].to_list() == [31.5]
    assert json.loads(dataset.quarantine.filter(pl.col("row_number") == 3)["raw_values"][0])["service_time"] == "25:00"
    _assert_reconciled(dataset)


def test_missing_required_table_is_one_clear_error(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A")])
    (root / "providers.parquet").unlink()
    with pytest.raises(MissingTableError, match="no table 'providers'"):
        load_dataset(root)


def test_missing_required_column_names_table_and_column(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A")])
    frame = pl.read_parquet(root / "billing_lines.parquet").drop("patient_id")
    frame.write_parquet(root / "billing_lines.parquet")
    with pytest.raises(MissingColumnError, match=r"'billing_lines'.*patient_id"):
        load_dataset(root)


def test_optional_tables_and_columns_may_be_absent(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A", quantity=None)])
    for name in ("tp_suspensions", "provider_debts"):
        (root / f"{name}.parquet").unlink()
    frame = pl.read_parquet(root / "billing_lines.parquet").drop("service_time", "quantity", "encoded_at")
    frame.write_parquet(root / "billing_lines.parquet")
    dataset = load_dataset(root)
    assert dataset.tables["tp_suspensions"].is_empty()
    assert dataset.tables["billing_lines"]["quantity"].to_list() == [1]  # the contract's default
    assert dataset.tables["nomenclature"].height > 20  # the shipped default


def test_missing_folder_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        load_dataset(tmp_path / "nowhere")


def test_a_patient_id_that_is_a_national_register_number_is_quarantined(tmp_path: Path) -> None:
    born_1985 = national_number(date(1985, 7, 30), 33)
    born_2003 = national_number(date(2003, 1, 2), 1)
    wrong_check = born_1985[:9] + f"{(int(born_1985[9:]) + 1) % 100:02d}"
    lines = [
        f.line("A", patient_id=born_1985),
        f.line("B", patient_id=born_2003),
        f.line("C", patient_id=wrong_check),  # 11 digits, no valid check: a pseudonym may look like that
        f.line("D", patient_id="PSN0000000001"),
    ]
    root = f.write_dataset(tmp_path, lines=lines)
    patients = [
        {
            "patient_id": born_2003,
            "birth_year": 2003,
            "sex": "F",
            "preferential_reimbursement": None,
            "chronic_condition": None,
        },
        {
            "patient_id": "PSN0000000001",
            "birth_year": 1950,
            "sex": "M",
            "preferential_reimbursement": True,
            "chronic_condition": False,
        },
    ]
    pl.DataFrame(patients, schema=TABLES["patients"].dtypes).write_parquet(root / "patients.parquet")
    dataset = load_dataset(root)
    quarantined = dataset.quarantine.select("table", "row_number", "reasons").to_dicts()
    assert quarantined == [
        {"table": "billing_lines", "row_number": 1, "reasons": ["patient_id_not_pseudonymised"]},
        {"table": "billing_lines", "row_number": 2, "reasons": ["patient_id_not_pseudonymised"]},
        {"table": "patients", "row_number": 1, "reasons": ["patient_id_not_pseudonymised"]},
    ]
    assert dataset.tables["billing_lines"]["claim_id"].to_list() == ["C", "D"]
    assert dataset.tables["patients"]["patient_id"].to_list() == ["PSN0000000001"]
    # The quarantine shows why, and keeps the rest of the row, but not the number itself.
    kept = [json.loads(raw) for raw in dataset.quarantine["raw_values"]]
    assert [row["patient_id"] for row in kept] == [WITHHELD] * 3
    assert born_1985 not in dataset.quarantine.write_ndjson()
    assert born_2003 not in dataset.quarantine.write_ndjson()
    assert kept[2]["birth_year"] == "2003"


POSTED_ONLY: list[tuple[str, dict[str, Any], str]] = [
    ("year 0", {"service_date": "0000-01-01"}, "malformed_service_date"),
    ("fractional quantity", {"quantity": "1.5"}, "malformed_quantity"),
    ("digits of another script", {"amount_fee": "٣١٫٥"}, "malformed_amount_fee"),
    ("a time that is not one", {"service_time": "25:61"}, "malformed_service_time"),
    ("blank patient", {"patient_id": "   "}, "missing_patient_id"),
]


def test_posted_records_are_quarantined_exactly_as_a_file_of_them(tmp_path: Path) -> None:
    """The service validates posted records in memory; the reasons must be the loader's own."""
    root = f.write_dataset(tmp_path / "data", lines=[f.line("OK1")], invoices=[f.invoice("INV1")])
    references = load_dataset(root).tables
    cases = [*BAD_LINES, *POSTED_ONLY]
    records = [{**f.line(f"BAD{i}"), **change} for i, (_, change, _) in enumerate(cases)]
    records += [f.line("OK2"), f.line("OK2", patient_id="again")]  # the second is a duplicate
    spec = TABLES["billing_lines"]
    text = pl.DataFrame(
        [{c: None if r.get(c) is None else str(r[c]) for c in spec.dtypes} for r in records],
        schema=dict.fromkeys(spec.dtypes, pl.String),
    )
    text.write_csv(tmp_path / "posted.csv")
    valid, quarantine, stats = load_records(spec, text, references, source="posted.csv")
    file_valid, file_quarantine, file_stats = load_files(
        spec, [SourceFile(tmp_path / "posted.csv", "posted.csv")], references
    )
    assert_frame_equal(valid, file_valid)
    assert_frame_equal(quarantine.drop("raw_values"), file_quarantine.drop("raw_values"))
    # A CSV file's rows also carry the field beyond its header (null here), posted records have none.
    stored = [{k: v for k, v in json.loads(raw).items() if k != BEYOND_HEADER} for raw in file_quarantine["raw_values"]]
    assert [json.loads(raw) for raw in quarantine["raw_values"]] == stored
    assert (stats.rows_read, stats.rows_quarantined) == (file_stats.rows_read, file_stats.rows_quarantined)
    reasons = dict(zip(quarantine["row_number"], quarantine["reasons"].to_list(), strict=True))
    for row, (case, _, reason) in enumerate(cases, start=1):
        assert reason in reasons[row], case
    assert valid["claim_id"].to_list() == ["OK2"]


def test_rows_read_in_many_chunks_are_validated_as_rows_in_one(tmp_path: Path) -> None:
    """A partition's rows come in many chunks (row groups, rows merged in reading order); the
    failed rows' values then come in chunks unlike their verdicts', which once made Polars
    panic while the reasons were listed."""
    lines = [f.line(f"C{i}") for i in range(10)] + [f.line("C4", patient_id="again")]
    root = f.write_dataset(tmp_path, lines=lines)
    spec, references = TABLES["billing_lines"], load_dataset(root, without_lines=True).tables
    typed = typed_lines(files_of(root, spec)).collect().drop(FILE_COLUMN)
    alternate = (pl.col("_row") % 2) == 0
    chunked = typed.lazy().filter(~alternate).merge_sorted(typed.lazy().filter(alternate), "_row").collect()
    assert max(chunked.n_chunks("all")) > 1
    assert chunked["_row"].to_list() == typed["_row"].to_list()
    valid, failed = validate(spec, chunked.lazy(), references)
    assert_frame_equal(valid, validate(spec, typed.rechunk().lazy(), references)[0])
    assert dict(zip(failed["_row"], failed["_reasons"].to_list(), strict=True)) == {11: ["duplicate_key"]}


def test_a_duplicate_check_told_which_claim_ids_repeat_quarantines_what_the_whole_check_does(
    tmp_path: Path,
) -> None:
    """A run in partitions knows beforehand the hashes of the claim ids read more than once;
    its check compares those rows only. A listed hash whose claim id is read once (as two ids
    sharing a hash would be) keeps that row; a null claim id is nullability's."""
    lines = [f.line(f"C{i}") for i in range(10)]
    lines += [f.line("C4", patient_id="again"), f.line("C7", patient_id="again"), f.line("C4", patient_id="third")]
    lines += [{**f.line("NULL"), "claim_id": None}]
    root = f.write_dataset(tmp_path, lines=lines)
    spec, references = TABLES["billing_lines"], load_dataset(root, without_lines=True).tables
    typed = typed_lines(files_of(root, spec)).collect().drop(FILE_COLUMN)
    hashes = repeated_hashes(typed.lazy(), pl.col("claim_id"))
    listed = pl.concat([hashes, pl.Series(["C2"]).hash()])
    told = replace(spec, schema=billing_lines_repeating_only(listed))

    valid, failed = validate(told, typed.lazy(), references)
    whole_valid, whole_failed = validate(spec, typed.lazy(), references)
    assert_frame_equal(valid, whole_valid)
    assert_frame_equal(failed, whole_failed)
    reasons = dict(zip(failed["_row"], failed["_reasons"].to_list(), strict=True))
    assert reasons == {11: ["duplicate_key"], 12: ["duplicate_key"], 13: ["duplicate_key"], 14: ["missing_claim_id"]}
    # Told of no repeats, the check keeps every copy: what it compares is what it was told.
    untold = replace(spec, schema=billing_lines_repeating_only(hashes.clear()))
    assert validate(untold, typed.lazy(), references)[0].height == whole_valid.height + 3


def test_files_of_one_schema_are_read_in_one_scan_as_if_one_by_one(tmp_path: Path) -> None:
    """Consecutive Parquet files of one schema share a scan; every row keeps its own file's
    name, row number and place, as when each file is read alone."""
    lines = [f.line(f"C{i}") for i in range(12)]
    lines[4] = f.line("C4", amount_reimbursed=99.0)  # quarantined, in the middle of a scan
    lines[10] = f.line("C1")  # read a second time, in a later scan
    root = f.write_dataset(tmp_path, lines=lines)
    frame = pl.read_parquet(root / "billing_lines.parquet")
    (root / "billing_lines.parquet").unlink()
    folder = root / "billing_lines"
    folder.mkdir()
    pieces = [(0, 3), (3, 3), (6, 1), (7, 1), (8, 1), (9, 3)]  # files 0-1 share a scan, 4-5 another
    for place, (start, length) in enumerate(pieces):
        rows = frame.slice(start, length)
        if place == 2:  # another schema: a scan of its own
            rows.with_columns(pl.col("quantity").cast(pl.Int32)).write_parquet(folder / f"part-{place}.parquet")
        elif place == 3:
            (folder / f"part-{place}.csv").write_text(_csv_text(rows, ",", False), encoding="utf-8")
        else:
            rows.write_parquet(folder / f"part-{place}.parquet")
    files = files_of(root, TABLES["billing_lines"])
    assert [first.name for _, first in scan_files(files)] == [
        "billing_lines/part-0.parquet",
        "billing_lines/part-2.parquet",
        "billing_lines/part-3.csv",
        "billing_lines/part-4.parquet",
    ]
    one_by_one = pl.concat(
        typed_lines([file]).with_columns(pl.lit(place, pl.UInt32).alias(FILE_COLUMN))
        for place, file in enumerate(files)
    )
    assert_frame_equal(typed_lines(files).collect(), one_by_one.collect())
    dataset = load_dataset(root)
    quarantined = dataset.quarantine.filter(pl.col("table") == "billing_lines")
    assert quarantined.select("source", "row_number", "reasons").rows() == [
        ("billing_lines/part-1.parquet", 2, ["reimbursed_exceeds_fee"]),
        ("billing_lines/part-5.parquet", 2, ["duplicate_key"]),
    ]
    assert [json.loads(raw)["claim_id"] for raw in quarantined["raw_values"]] == ["C4", "C1"]

"""Broken and hostile input: every row ends valid or quarantined with a reason; a file that
cannot be read at all is one error line that quotes none of its values."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from data_contracts import TABLES, UnreadableTableError, load_dataset
from secm.cli import app
from secm.pipeline import run
from tests import factories as f
from tests.spark import java_or_skip

HEADER = "claim_id,provider_nihdi,patient_id,insurer_code,nomenclature_code,service_date,channel,submitted_date,amount_fee,amount_reimbursed,quantity"


def _csv_lines(root: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    """The dataset at ``root`` with ``billing_lines`` as a CSV of ``rows`` under ``HEADER``."""
    f.write_dataset(root, lines=[])
    (root / "billing_lines.parquet").unlink()
    (root / "billing_lines.csv").write_bytes((HEADER + "\n" + "".join(r + "\n" for r in rows)).encode(encoding))
    return root


def _row(claim_id: str, *, service_date: str = "2024-03-15", patient: str = "P1", insurer: str = "100") -> str:
    return f"{claim_id},{f.GP},{patient},{insurer},101076,{service_date},eattest,2024-03-20,31.5,23.63,1"


def _reasons(root: Path) -> dict[str, list[str]]:
    dataset = load_dataset(root)
    stats = dataset.stats["billing_lines"]
    assert stats.rows_read == stats.rows_valid + stats.rows_quarantined
    lines = dataset.quarantine.filter(pl.col("table") == "billing_lines")
    return {json.loads(raw)["claim_id"]: sorted(r) for raw, r in lines.select("raw_values", "reasons").iter_rows()}


def test_values_padded_with_white_space_read_as_written_without_it(tmp_path: Path) -> None:
    """Every kind of value (text, code, date, decimal, integer), padded with ASCII and Unicode
    white space, reads as written plainly: the loader trims before it parses."""
    rows = [_row("A"), _row("B", service_date="15/03/2024")]
    padded = [",".join(f"\u3000 \t{value}\u00a0" for value in row.split(",")) for row in rows]
    plain = load_dataset(_csv_lines(tmp_path / "plain", rows))
    read = load_dataset(_csv_lines(tmp_path / "padded", padded))
    assert read.quarantine.is_empty()
    assert plain.quarantine.is_empty()
    assert read.tables["billing_lines"].equals(plain.tables["billing_lines"])
    assert read.tables["billing_lines"]["service_date"].to_list() == [date(2024, 3, 15)] * 2


@pytest.mark.parametrize("day", ["0000-01-01", "-001-01-01", "0001-01-01", "1899-12-31", "2200-01-01", "99999-01-01"])
def test_dates_outside_the_plausible_years_are_malformed_not_fatal(tmp_path: Path, day: str) -> None:
    root = _csv_lines(tmp_path, [_row("A", service_date=day), _row("B")])
    assert _reasons(root) == {"A": ["malformed_service_date"]}


def test_parquet_dates_outside_the_plausible_years_are_malformed(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A", service_date=date(1, 1, 1)), f.line("B")])
    frame = pl.read_parquet(root / "billing_lines.parquet").with_columns(
        pl.when(pl.col("claim_id") == "B").then(datetime(2024, 3, 15, 8)).alias("encoded_at")
    )
    frame.write_parquet(root / "billing_lines.parquet")
    assert _reasons(root) == {"A": ["malformed_service_date"]}


def test_a_row_with_more_fields_than_the_header_is_quarantined(tmp_path: Path) -> None:
    root = _csv_lines(tmp_path, [_row("A") + ",surplus", _row("B"), _row("C").rsplit(",", 3)[0]])
    reasons = _reasons(root)
    assert reasons["A"] == ["malformed_row"]
    assert "B" not in reasons
    assert "missing_amount_fee" in reasons["C"]  # a short row: the missing fields are missing


def _in_partitions(root: Path) -> object:
    return run(root, root / "out", partitions=2)


def _on_spark(root: Path) -> object:
    java_or_skip()
    return run(root, root / "out", partitions=2, engine="spark", spark_master="local[2]")


@pytest.mark.parametrize("read", [load_dataset, _in_partitions, _on_spark], ids=["whole", "in partitions", "on Spark"])
def test_an_unbalanced_quote_is_one_line_without_values(tmp_path: Path, read: Callable[[Path], object]) -> None:
    root = _csv_lines(tmp_path, [_row("A"), _row("B", patient='"PSECRET'), *(_row(f"C{i}") for i in range(50))])
    with pytest.raises(UnreadableTableError) as raised:
        read(root)
    message = str(raised.value)
    assert "billing_lines.csv" in message
    assert "\n" not in message
    assert "PSECRET" not in message
    assert "P1" not in message


@pytest.mark.parametrize("read", [load_dataset, _in_partitions], ids=["whole", "in partitions"])
def test_a_parquet_file_damaged_past_its_footer_is_one_error_line(
    tmp_path: Path, read: Callable[[Path], object]
) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line(f"C{i}") for i in range(50)])
    path = root / "billing_lines.parquet"
    # The patients first, and their first page's header broken: the schema and the claim ids
    # still read, the rows do not.
    frame = pl.read_parquet(path)
    frame.select("patient_id", pl.exclude("patient_id")).write_parquet(path, compression="zstd")
    damaged = bytearray(path.read_bytes())
    damaged[20:84] = bytes(b ^ 0xFF for b in damaged[20:84])
    path.write_bytes(bytes(damaged))
    with pytest.raises(UnreadableTableError) as raised:
        read(root)
    message = str(raised.value)
    assert "billing_lines.parquet" in message
    assert "\n" not in message


def test_a_nested_parquet_column_is_malformed(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A"), f.line("B")])
    frame = pl.read_parquet(root / "billing_lines.parquet").with_columns(
        pl.when(pl.col("claim_id") == "A").then(pl.lit(["x", "y"])).otherwise(pl.lit(["P2"])).alias("patient_id")
    )
    frame.write_parquet(root / "billing_lines.parquet")
    assert _reasons(root) == {"A": ["malformed_patient_id"], "B": ["malformed_patient_id"]}


def test_bytes_that_are_not_utf8_are_quarantined_not_replaced(tmp_path: Path) -> None:
    root = _csv_lines(tmp_path, [_row("A", patient="Pé1"), _row("B")], encoding="latin-1")
    assert _reasons(root) == {"A": ["malformed_encoding"]}


def test_a_fractional_quantity_is_malformed_not_truncated(tmp_path: Path) -> None:
    root = f.write_dataset(tmp_path, lines=[f.line("A"), f.line("B"), f.line("C")])
    frame = pl.read_parquet(root / "billing_lines.parquet").with_columns(
        pl.when(pl.col("claim_id") == "A").then(1.5).otherwise(2.0).alias("quantity")
    )
    frame.write_parquet(root / "billing_lines.parquet")
    dataset = load_dataset(root)
    assert dataset.quarantine["reasons"].to_list() == [["malformed_quantity"]]
    assert dataset.tables["billing_lines"]["quantity"].to_list() == [2, 2]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"provider_nihdi": "１０００１２３４００３"}, "invalid_provider_nihdi"),  # full-width digits
        ({"insurer": "١٠٠"}, "invalid_insurer_code"),  # Arabic-Indic digits
    ],
)
def test_digits_are_ascii_digits(tmp_path: Path, change: dict[str, str], reason: str) -> None:
    row = _row("A", **{k: v for k, v in change.items() if k == "insurer"})
    if "provider_nihdi" in change:
        row = row.replace(f.GP, change["provider_nihdi"])
    root = _csv_lines(tmp_path, [row, _row("B")])
    assert reason in _reasons(root)["A"]


def test_a_table_with_a_header_and_no_row_is_empty(tmp_path: Path) -> None:
    root = _csv_lines(tmp_path, [])
    dataset = load_dataset(root)
    assert dataset.tables["billing_lines"].is_empty()
    assert dataset.tables["billing_lines"].schema == TABLES["billing_lines"].empty().schema
    assert dataset.stats["billing_lines"].rows_read == 0


def test_an_empty_file_is_one_line(tmp_path: Path) -> None:
    root = _csv_lines(tmp_path, [])
    (root / "billing_lines.csv").write_bytes(b"")
    with pytest.raises(UnreadableTableError, match=r"billing_lines\.csv: the file is empty"):
        load_dataset(root)


def test_an_empty_dataset_gives_an_empty_run_and_nothing_to_train_on(tmp_path: Path) -> None:
    root = _csv_lines(tmp_path / "data", [])
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--data", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["tables"]["billing_lines"]["rows_read"] == 0
    assert info["detector"]["profiles_scored"] == 0
    trained = runner.invoke(app, ["train", "--data", str(root)])
    assert trained.exit_code == 1
    assert "Nothing to train on" in trained.output
    assert "Traceback" not in trained.output


def _values() -> st.SearchStrategy[str]:
    """What a column may receive: any text, any date in either format, numbers of any size."""
    day = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))
    return st.one_of(
        st.text(max_size=30),
        day.map(date.isoformat),
        day.map(lambda d: d.strftime("%d/%m/%Y")),
        st.sampled_from(["0000-01-01", "-001-01-01", "2024-02-30", "24:00", "NaN", "inf", "1e308", "-0"]),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_in_any_column_ends_valid_or_quarantined(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path_factory.mktemp("hostile")
    columns = list(TABLES["billing_lines"].dtypes)
    good = {c: "" if v is None else str(v) for c, v in f.line("X").items()}
    rows = []
    for i in range(data.draw(st.integers(1, 6), label="rows")):
        hostile = data.draw(st.sets(st.sampled_from(columns), max_size=4), label="columns")
        row = {c: data.draw(_values(), label=c) if c in hostile else good.get(c, "") for c in columns}
        row["patient_id"] = f"PATIENT-{i:04d}" if "patient_id" not in hostile else row["patient_id"]
        rows.append(row)
    f.write_dataset(root, lines=[])
    (root / "billing_lines.parquet").unlink()
    pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String)).write_csv(root / "billing_lines.csv")
    result = run(root, root / "out")
    stats = result.info["tables"]["billing_lines"]
    assert stats["rows_read"] == len(rows)
    assert stats["rows_read"] == stats["rows_valid"] + stats["rows_quarantined"]
    printed = capfd.readouterr()
    assert "PATIENT-" not in printed.err + printed.out

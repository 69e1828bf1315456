"""Small hand-built datasets: a contract-shaped folder from a few dicts, and their flags."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from data_contracts import TABLES, load_dataset
from rules import evaluate
from rules.durable_engine import evaluate_durable

GP = "10001234003"
NURSE = "40005678401"
OTHER_GP = "10009999004"
NUMBER = "0400000001"


def provider(nihdi: str = GP, profession: str = "gp", **kw: Any) -> dict[str, Any]:
    return {"provider_nihdi": nihdi, "profession": profession, "region": "BRU", "postcode": "1000", **kw}


def line(claim_id: str, **kw: Any) -> dict[str, Any]:
    """A valid cash line by GP on 2024-03-15 at 10:00, submitted the same day."""
    row: dict[str, Any] = {
        "claim_id": claim_id,
        "invoice_id": None,
        "provider_nihdi": GP,
        "patient_id": f"P{claim_id}",
        "insurer_code": "100",
        "nomenclature_code": "101076",
        "service_date": date(2024, 3, 15),
        "service_time": time(10, 0),
        "encoded_at": None,
        "channel": "eattest",
        "submitted_date": date(2024, 3, 15),
        "amount_fee": 31.5,
        "amount_reimbursed": 23.63,
        "place_of_service": "office",
        "institution_nihdi": None,
        "quantity": 1,
    }
    row.update(kw)
    return row


def tp_line(claim_id: str, invoice_id: str | None, **kw: Any) -> dict[str, Any]:
    """A third-party (eFact) line on ``invoice_id``: no submitted date of its own."""
    return line(claim_id, **{"invoice_id": invoice_id, "channel": "efact", "submitted_date": None, **kw})


def invoice(invoice_id: str, submitted: date = date(2024, 4, 10), number: str | None = NUMBER) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "third_party_number": number,
        "insurer_code": "100",
        "submitted_date": submitted,
        "amount_claimed": 10.0,
        "line_count": 1,
    }


def registry(
    number: str = NUMBER, nihdi: str = GP, valid_from: date = date(2020, 1, 1), valid_to: date | None = None
) -> dict[str, Any]:
    return {
        "third_party_number": number,
        "authorized_nihdi": nihdi,
        "holder_name": "Practice",
        "valid_from": valid_from,
        "valid_to": valid_to,
    }


def evening_at(day: date, hour: int, minute: int) -> datetime:
    return datetime.combine(day, time(hour, minute))


def write_dataset(
    root: Path,
    *,
    lines: list[dict[str, Any]],
    invoices: list[dict[str, Any]] | None = None,
    providers: list[dict[str, Any]] | None = None,
    registry_rows: list[dict[str, Any]] | None = None,
    suspensions: list[dict[str, Any]] | None = None,
    debts: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    nomenclature: list[dict[str, Any]] | None = None,
    patients: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the tables as Parquet with the contract's types; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    tables = {
        "billing_lines": lines,
        "third_party_invoices": invoices or [],
        "providers": providers or [provider(), provider(NURSE, "nurse"), provider(OTHER_GP)],
        "third_party_registry": registry_rows if registry_rows is not None else [registry()],
        "tp_suspensions": suspensions or [],
        "provider_debts": debts or [],
        "provider_status": statuses or [],
    }
    if nomenclature is not None:
        tables["nomenclature"] = nomenclature
    if patients is not None:
        tables["patients"] = patients
    for name, rows in tables.items():
        pl.DataFrame(rows, schema=TABLES[name].dtypes).write_parquet(root / f"{name}.parquet")
    return root


def flags(root: Path, legislation: str = "current", effective_from: date | None = None, **tables: Any) -> pl.DataFrame:
    """The Polars engine's flags on a hand-built dataset, after checking durable_rules flags the same."""
    dataset = load_dataset(write_dataset(root, **tables))
    assert dataset.quarantine.is_empty(), dataset.quarantine.to_dicts()
    version = {"legislation": legislation, "effective_from": effective_from}
    batch = evaluate(dataset.lazy_tables(), **version)
    assert_frame_equal(evaluate_durable(dataset.lazy_tables(), **version), batch)
    return batch


def flagged(frame: pl.DataFrame, rule_id: str) -> dict[str, str]:
    """claim_id -> reason for one rule."""
    rows = frame.filter(pl.col("rule_id") == rule_id)
    return dict(zip(rows["claim_id"], rows["reason"], strict=True))

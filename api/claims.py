"""Real-time claim checks: contract validation, then the catalog on its durable_rules back end.

A check validates the posted lines and invoices exactly as a dataset's files are validated
(same quarantine reasons), against the reference tables of the newest published run. The
valid lines are then evaluated with each provider's recent lines, so that a duplicate or a
burst is caught as its last line arrives; only the posted lines' flags are answered.

State is bounded: per provider, the ``HISTORY_LINES`` lines with the latest service dates
are kept (older duplicates and bursts are the batch run's job), for the ``HISTORY_PROVIDERS``
providers checked last. Posted invoices are the caller's own: a line is checked against the
invoices its caller posted (the last ``INVOICES_KEPT``), never another caller's. Nothing is
kept longer than ``KEPT_SECONDS`` after it was last posted. Each check runs in its own
durable_rules sessions, in the back end's worker process; the state is read and updated
under a lock.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from api import tables as t
from api.publish import REFERENCE_TABLES
from data_contracts import TABLES
from data_contracts.loader import load_files
from data_contracts.reader import SourceFile
from rules import enriched_lines, load_catalog
from rules.durable_engine import References, evaluate_durable

HISTORY_LINES = 200
HISTORY_PROVIDERS = 50_000
INVOICES_KEPT = 10_000
CALLERS_KEPT = 1_000
KEPT_SECONDS = 24 * 3600.0
# A check's rules are decided within this, or the worker is replaced and the check retried once.
DEADLINE_SECONDS = 10.0


class Recent:
    """Values by key: the ``size`` stored last, none stored more than ``seconds`` ago."""

    def __init__(self, size: int, seconds: float = KEPT_SECONDS) -> None:
        self.size = size
        self.seconds = seconds
        self._values: OrderedDict[str, tuple[float, pl.DataFrame]] = OrderedDict()

    def get(self, key: str) -> pl.DataFrame | None:
        self._forget()
        found = self._values.get(key)
        return None if found is None else found[1]

    def put(self, key: str, value: pl.DataFrame) -> None:
        self._values[key] = (time.monotonic(), value)
        self._values.move_to_end(key)
        self._forget()

    def __len__(self) -> int:
        return len(self._values)

    def _forget(self) -> None:
        """Drop the oldest while there are too many or they are too old (oldest first)."""
        too_old = time.monotonic() - self.seconds
        while self._values and (len(self._values) > self.size or next(iter(self._values.values()))[0] < too_old):
            self._values.popitem(last=False)


def reference_tables(connection: sa.Connection, run_id: str) -> dict[str, pl.DataFrame]:
    """The reference tables published with ``run_id``, typed as the contract says."""
    frames = {}
    for name in REFERENCE_TABLES:
        spec = TABLES[name]
        rows = connection.execute(
            sa.select(t.reference_rows.c.row).where(
                t.reference_rows.c.run_id == run_id, t.reference_rows.c.table_name == name
            )
        ).scalars()
        decoded = pl.Series("row", list(rows), dtype=pl.String).str.json_decode(pl.Struct(spec.dtypes))
        frames[name] = decoded.struct.unnest() if decoded.len() else spec.empty()
    return frames


def _validate(
    name: str, records: list[dict[str, Any]], folder: Path, valid: dict[str, pl.DataFrame]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Valid rows and quarantine of posted records, through the contract's own loader."""
    spec = TABLES[name]
    if not records:
        return spec.empty(), pl.DataFrame()
    unknown = sorted({k for r in records for k in r} - set(spec.dtypes))
    if unknown:
        msg = f"Unknown {name} field(s) {unknown}; the contract's fields are {sorted(spec.dtypes)}"
        raise ValueError(msg)
    columns = list(spec.dtypes)
    frame = pl.DataFrame(
        [{c: None if r.get(c) is None else str(r[c]) for c in columns} for r in records],
        schema=dict.fromkeys(columns, pl.String),
    )
    path = folder / f"{name}.csv"
    frame.write_csv(path)
    rows, quarantine, _ = load_files(spec, [SourceFile(path, path.name)], valid)
    return rows, quarantine


@dataclass
class ClaimChecker:
    """Checks posted claims against one published run's reference data."""

    run_id: str
    legislation: str
    effective_from: date | None
    references: dict[str, pl.DataFrame]
    history: Recent = field(default_factory=lambda: Recent(HISTORY_PROVIDERS))
    invoices: Recent = field(default_factory=lambda: Recent(CALLERS_KEPT))  # per caller
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.shared = References(self.run_id, self.references)  # sent to each rules worker once

    def check(self, lines: list[dict[str, Any]], invoices: list[dict[str, Any]], caller: str) -> dict[str, Any]:
        """``errors`` (per invalid record, with quarantine reasons) and ``claims`` (flags per
        valid line), with the invoices ``caller`` posted before."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            valid_invoices, bad_invoices = _validate(
                "third_party_invoices", invoices, folder, {"providers": self.references["providers"]}
            )
            with self.lock:
                posted = self.invoices.get(caller)
            earlier_invoices = TABLES["third_party_invoices"].empty() if posted is None else posted
            known_invoices = pl.concat([earlier_invoices, valid_invoices]).unique("invoice_id", keep="last")
            valid = {**self.references, "third_party_invoices": known_invoices}
            valid_lines, bad_lines = _validate("billing_lines", lines, folder, valid)
        errors = _errors("third_party_invoices", bad_invoices, invoices, "invoice_id")
        errors += _errors("billing_lines", bad_lines, lines, "claim_id")
        if valid_lines.is_empty():
            return {"run_id": self.run_id, "errors": errors, "claims": []}
        with self.lock:
            providers = valid_lines["provider_nihdi"].unique().to_list()
            earlier = [h for h in (self.history.get(p) for p in providers) if h is not None]
            context = pl.concat([*earlier, valid_lines]).unique("claim_id", keep="last")
            for provider, recent in context.partition_by("provider_nihdi", as_dict=True).items():
                self.history.put(str(provider[0]), recent.sort("service_date").tail(HISTORY_LINES))
            self.invoices.put(caller, known_invoices.tail(INVOICES_KEPT))
        tables = {**valid, "billing_lines": context}
        enriched = enriched_lines({name: frame.lazy() for name, frame in tables.items()})
        posted = valid_lines.select("claim_id")
        flags = evaluate_durable(
            {"billing_lines": context, "third_party_invoices": known_invoices},
            legislation=self.legislation,
            lines=enriched,
            effective_from=self.effective_from,
            posted=posted["claim_id"],
            references=self.shared,
            deadline=DEADLINE_SECONDS,
        )
        by_claim: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in flags.join(posted, on="claim_id", how="semi").iter_rows(named=True):
            by_claim[f["claim_id"]].append(
                {
                    "rule_id": f["rule_id"],
                    "reason": f["reason"],
                    "amount_at_stake_eur": f["amount_at_stake_eur"],
                    "legal_basis": f["legal_basis"],
                    "evidence": json.loads(f["evidence"]),
                }
            )
        claims = [{"claim_id": claim_id, "flags": by_claim.get(claim_id, [])} for claim_id in posted["claim_id"]]
        return {"run_id": self.run_id, "errors": errors, "claims": claims}


def _errors(table: str, quarantine: pl.DataFrame, records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    if quarantine.is_empty():
        return []
    return [
        {
            "table": table,
            "index": row - 1,
            key: records[row - 1].get(key),
            "reasons": reasons,
        }
        for row, reasons in quarantine.select("row_number", "reasons").iter_rows()
    ]


def checker_for(engine: sa.Engine, run_id: str, cache: dict[str, ClaimChecker]) -> ClaimChecker:
    """The checker of ``run_id`` (built once: a run's reference data never changes)."""
    if run_id not in cache:
        with engine.connect() as connection:
            legislation, info = connection.execute(
                sa.select(t.runs.c.legislation, t.runs.c.info).where(t.runs.c.run_id == run_id)
            ).one()
            references = reference_tables(connection, run_id)
        load_catalog().check_legislation(legislation)
        effective_from = info.get("effective_from")
        start = date.fromisoformat(effective_from) if effective_from else None
        cache[run_id] = ClaimChecker(run_id, legislation, start, references)
    return cache[run_id]

"""Real-time claim checks: contract validation, then the catalog on its durable_rules back end.

A check validates the posted lines and invoices exactly as a dataset's files are validated
(same quarantine reasons), against the reference tables of the newest published run. The
valid lines are then evaluated with those of each provider's recent lines that bear on them,
so that a duplicate or a burst is caught as its last line arrives; only the posted lines'
flags are answered. A check posts a few lines, and every Polars query costs its fixed time
however few its rows: records are validated one by one (``data_contracts.records``) and lines
enriched from in-memory indexes (``rules.records``), both tested equal to the Polars paths.

What earlier checks posted (each provider's recent lines, each caller's invoices) is the
service's real-time history (``api.history``): in the application database, so that every
process of the service checks against the same lines; bounded in lines, invoices and age.
Checks arriving together at a process are decided in one batch (see ``ClaimChecker.check``):
its audit entries and its reads and writes of the history in one transaction, then its rules
in durable_rules sessions in the rules workers (``rules.durable_worker``).
"""

from __future__ import annotations

import gc
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl
import sqlalchemy as sa

from api import tables as t
from api.database import reading
from api.history import History
from api.publish import REFERENCE_TABLES
from api.queries import NEWEST_RUN
from data_contracts import TABLES
from data_contracts.loader import load_records
from data_contracts.records import Known, Quarantined, Row, trimmed, validate_records
from rules import load_catalog
from rules.context import NO_LINES
from rules.durable_engine import References, evaluate_durable, prepare_workers
from rules.durable_worker import WorkerUnavailable
from rules.errors import RuleError
from rules.records import ReferenceIndex, bearing_on, bearing_same_day

log = logging.getLogger(__name__)

MAX_BATCH_LINES = 2_000  # lines of the checks decided together
# A check's rules are decided within this, or the worker is replaced and the check retried once.
DEADLINE_SECONDS = 10.0
# Checkers kept per process: the newest run's, and the one before for the checks that read
# the newest run just before a publish. Older ones are dropped with their reference data.
CHECKERS_KEPT = 2
INVOICE_TYPES = TABLES["third_party_invoices"].dtypes


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


def _unknown_fields(name: str, records: list[dict[str, Any]]) -> None:
    spec = TABLES[name]
    unknown = sorted({k for r in records for k in r} - set(spec.dtypes))
    if unknown:
        msg = f"Unknown {name} field(s) {unknown}; the contract's fields are {sorted(spec.dtypes)}"
        raise ValueError(msg)


def _validate(
    name: str, records: list[dict[str, Any]], known: Known | None, tables: Callable[[], dict[str, pl.DataFrame]]
) -> tuple[list[Row], Quarantined]:
    """Valid rows and quarantine reasons of posted records: checked one by one in plain Python
    when their values are written the usual way (``data_contracts.records``), else by the
    contract's own loader against ``tables()``; both give the same reasons."""
    spec = TABLES[name]
    if not records:
        return [], []
    columns = list(spec.dtypes)
    text = [{c: None if r.get(c) is None else str(r[c]) for c in columns} for r in records]
    verdict = validate_records(spec, text, known)
    if verdict is not None:
        return verdict.valid, verdict.quarantined
    frame = pl.DataFrame(text, schema=dict.fromkeys(columns, pl.String))
    rows, quarantine, _ = load_records(spec, frame, tables())
    return rows.to_dicts(), list(zip(quarantine["row_number"], quarantine["reasons"].to_list(), strict=True))


def _keys(lines: list[dict[str, Any]], column: str) -> frozenset[str]:
    return frozenset(str(line.get(column)).strip() for line in lines)


@dataclass(eq=False)
class _Check:
    """One request's records, waiting for a batch; then its answer or its error."""

    lines: list[dict[str, Any]]
    invoices: list[dict[str, Any]]
    caller: str
    audit: dict[str, Any] | None  # its audit-log entry, written before it is decided
    providers: frozenset[str] = field(init=False)  # as posted, trimmed
    claims: frozenset[str] = field(init=False)
    answer: dict[str, Any] | None = None
    error: BaseException | None = None
    # Set once it is answered, or once it heads the queue and it is its turn to decide a batch.
    woken: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.providers, self.claims = _keys(self.lines, "provider_nihdi"), _keys(self.lines, "claim_id")

    @property
    def done(self) -> bool:
        return self.answer is not None or self.error is not None


def _batch(queue: list[_Check]) -> list[_Check]:
    """Checks from the head of ``queue`` that can be decided together as if one after the other.

    They are the same caller's, post no invoices (the first may), touch disjoint providers
    (every rule is local to a provider) and claim ids, and hold ``MAX_BATCH_LINES`` at most.
    A check left out holds its providers back for the rest, so each provider's checks keep
    their arrival order.
    """
    first = queue[0]
    batch, providers, claims = [first], set(first.providers), set(first.claims)
    held: set[str] = set()
    size = len(first.lines)
    for check in queue[1:]:
        if first.invoices:
            break
        fits = (
            check.caller == first.caller
            and not check.invoices
            and size + len(check.lines) <= MAX_BATCH_LINES
            and providers.isdisjoint(check.providers)
            and held.isdisjoint(check.providers)
            and claims.isdisjoint(check.claims)
        )
        if fits:
            batch.append(check)
            providers |= check.providers
            claims |= check.claims
            size += len(check.lines)
        else:
            held |= check.providers
    return batch


@dataclass
class ClaimChecker:
    """Checks posted claims against one published run's reference data."""

    run_id: str
    legislation: str
    effective_from: date | None
    references: dict[str, pl.DataFrame]
    engine: sa.Engine  # the application database: audit log and real-time history
    turn: threading.Lock = field(default_factory=threading.Lock)  # over queue and deciding
    queue: list[_Check] = field(default_factory=list)
    deciding: bool = False

    def __post_init__(self) -> None:
        # Where a batch's rules are decided while its transaction ends (one batch at a time).
        self.rules_thread = ThreadPoolExecutor(1, thread_name_prefix="secm-claim-rules")
        # Sent to each rules worker once, the line tables empty: a check sends its lines enriched.
        self.shared = References(self.run_id, {**self.references, **NO_LINES})
        self.providers = frozenset(self.references["providers"]["provider_nihdi"])
        self.codes = frozenset(self.references["nomenclature"]["code"])
        self.index = ReferenceIndex(self.references)
        self.history = History(self.run_id)
        # Then the history gives only its recent lines of a posted line's provider and day.
        self.same_day = bearing_same_day(load_catalog())

    def check(
        self,
        lines: list[dict[str, Any]],
        invoices: list[dict[str, Any]],
        caller: str,
        audit: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``errors`` (per invalid record, with quarantine reasons) and ``claims`` (flags per
        valid line), with the invoices ``caller`` posted before. ``audit`` is the check's
        audit-log entry: the entries of the checks decided together are written in one
        transaction before they are decided (``journal``).

        Checks arriving together are decided in batches (see :func:`_batch`): the thread that
        finds no batch at work decides the next one, the others wait for their answer or
        their turn to decide the next.
        """
        _unknown_fields("third_party_invoices", invoices)
        _unknown_fields("billing_lines", lines)
        mine = _Check(lines, invoices, caller, audit)
        with self.turn:
            self.queue.append(mine)
            leading, self.deciding = not self.deciding, True
        if not leading:
            mine.woken.wait()
        if not mine.done:  # it heads the queue: its batch holds it
            self._lead()
        if mine.error is not None:
            raise mine.error
        assert mine.answer is not None
        return mine.answer

    def _lead(self) -> None:
        """Decide the batch at the head of the queue, then wake its checks and hand the turn
        to the check now at the head (waking only those: each check waits on its own event)."""
        with self.turn:
            batch = _batch(self.queue)
            for check in batch:
                self.queue.remove(check)
        try:
            for check, answer in zip(batch, self._decide(batch), strict=True):
                check.answer = answer
        except BaseException as exc:
            for check in batch:
                check.error = exc
        finally:
            with self.turn:
                if self.queue:
                    self.queue[0].woken.set()
                else:
                    self.deciding = False
            for check in batch:
                check.woken.set()

    def _decide(self, batch: list[_Check]) -> list[dict[str, Any]]:
        """Each check's answer; the checks are compatible (see :func:`_batch`)."""
        caller, invoices = batch[0].caller, batch[0].invoices
        entries = [check.audit for check in batch if check.audit is not None]
        lines = [line for check in batch for line in check.lines]
        valid_invoices, bad_invoices = _validate("third_party_invoices", invoices, None, dict)
        named = {trimmed(str(line["invoice_id"])) for line in lines if line.get("invoice_id") is not None}
        posted = {invoice["invoice_id"]: invoice for invoice in valid_invoices}
        # The lines are validated before the history is taken (other batches wait while it is
        # held), against the invoices their caller had posted when the check began.
        known_invoices = posted
        if named - posted.keys():
            with reading(self.engine).connect() as connection:
                known_invoices = self.history.invoices(connection, caller, named - posted.keys()) | posted

        def tables() -> dict[str, pl.DataFrame]:
            rows = list(known_invoices.values())
            return {**self.references, "third_party_invoices": pl.DataFrame(rows, schema=INVOICE_TYPES)}

        submitted = {i: known_invoices[i]["submitted_date"] for i in named if i in known_invoices}
        known = Known(self.providers, self.codes, submitted)
        valid_lines, bad_lines = _validate("billing_lines", lines, known, tables)
        with self.history.transaction(self.engine, entries) as connection:
            self.history.post_invoices(connection, caller, valid_invoices)
            context, keep = self.history.lines(connection, valid_lines, same_day=self.same_day)
            # The recent lines' invoices too: they are enriched with them.
            referred = {line["invoice_id"] for line in context if line["invoice_id"] is not None}
            known_invoices |= self.history.invoices(connection, caller, referred - known_invoices.keys())
            # The rules need nothing the rest of the transaction writes: they run meanwhile.
            flags = self.rules_thread.submit(self._flags, valid_lines, context, known_invoices)
            keep()
        line_errors = _errors("billing_lines", bad_lines, lines, "claim_id")
        by_claim: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in flags.result().iter_rows(named=True):
            by_claim[f["claim_id"]].append(
                {
                    "rule_id": f["rule_id"],
                    "reason": f["reason"],
                    "amount_at_stake_eur": f["amount_at_stake_eur"],
                    "legal_basis": f["legal_basis"],
                    "evidence": json.loads(f["evidence"]),
                }
            )
        valid_claims = [line["claim_id"] for line in valid_lines]
        answers, offset = [], 0
        for check in batch:
            end = offset + len(check.lines)
            errors = [{**e, "index": e["index"] - offset} for e in line_errors if offset <= e["index"] < end]
            if check is batch[0]:
                errors = _errors("third_party_invoices", bad_invoices, invoices, "invoice_id") + errors
            mine = [c for c in valid_claims if c in check.claims]
            claims = [{"claim_id": claim_id, "flags": by_claim.get(claim_id, [])} for claim_id in mine]
            answers.append({"run_id": self.run_id, "errors": errors, "claims": claims})
            offset = end
        return answers

    def _flags(self, valid_lines: list[Row], context: list[Row], invoices: dict[str, Row]) -> pl.DataFrame:
        """The flags of ``valid_lines``, checked with their providers' recent lines (``context``)."""
        if not valid_lines:
            return pl.DataFrame(schema={"claim_id": pl.String, "evidence": pl.String})
        posted = [line["claim_id"] for line in valid_lines]
        return self._rules(bearing_on(load_catalog(), context, set(posted)), invoices, posted)

    def _rules(self, lines: list[Row], invoices: dict[str, Row], posted: list[str]) -> pl.DataFrame:
        """The flags of the ``posted`` claims among ``lines``, decided by the rules workers."""
        named = {line["invoice_id"] for line in lines} & invoices.keys()
        found = {i: (invoices[i]["third_party_number"], invoices[i]["submitted_date"]) for i in named}
        return evaluate_durable(
            {},
            legislation=self.legislation,
            lines=self.index.enrich(lines, found).with_row_index("_i"),
            effective_from=self.effective_from,
            posted=pl.Series(posted, dtype=pl.String),
            references=self.shared,
            deadline=DEADLINE_SECONDS,
        )

    def warm(self) -> None:
        """Start the rules workers, each holding this run's reference tables and rulesets (those
        of ``current`` too when the run's legislation takes effect on a date)."""
        prepare_workers(self.shared, {self.legislation, "current"} if self.effective_from else {self.legislation})


def _errors(table: str, quarantined: Quarantined, records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [
        {"table": table, "index": row - 1, key: records[row - 1].get(key), "reasons": reasons}
        for row, reasons in quarantined
    ]


def warm_checker(engine: sa.Engine, cache: dict[str, ClaimChecker]) -> None:
    """Build the newest run's checker and start its rules workers now, so that the first checks
    after a start do not wait for them (seconds: processes to start, rulesets to register)."""
    with engine.connect() as connection:
        newest = connection.execute(sa.select(NEWEST_RUN)).scalar()
    if newest is None:
        return
    try:
        checker_for(engine, newest, cache).warm()
    except (RuleError, WorkerUnavailable) as exc:  # the first check will say so to its caller
        log.warning("could not prepare claim checks of run %s at start: %s", newest, exc)


def checker_for(engine: sa.Engine, run_id: str, cache: dict[str, ClaimChecker]) -> ClaimChecker:
    """The checker of ``run_id`` (built once: a run's reference data never changes), kept with
    the ``CHECKERS_KEPT`` last built; a check still deciding on a dropped one holds it until it
    is answered."""
    checker = cache.get(run_id)
    if checker is None:
        with engine.connect() as connection:
            legislation, info = connection.execute(
                sa.select(t.runs.c.legislation, t.runs.c.info).where(t.runs.c.run_id == run_id)
            ).one()
            references = reference_tables(connection, run_id)
        load_catalog().check_legislation(legislation)
        effective_from = info.get("effective_from")
        start = date.fromisoformat(effective_from) if effective_from else None
        checker = cache[run_id] = ClaimChecker(run_id, legislation, start, references, engine)
        for stale in list(cache)[:-CHECKERS_KEPT]:
            cache.pop(stale, None)
        # The reference indexes live as long as the run is served: the cyclic garbage collector
        # need not walk them at each full collection (a pause in the middle of a check). What
        # is garbage already is collected first: frozen, it would never be (engines and their
        # connections among it).
        gc.collect()
        gc.freeze()
    return checker

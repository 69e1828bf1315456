"""The real-time history: what earlier checks posted, in the application database.

A duplicate or a burst is caught as its last line arrives only if the check sees the lines
posted before it, and a line on an invoice only if the check knows the invoice its caller
posted. The service runs several processes (and may run on several machines over one
PostgreSQL database), so this memory cannot live in one process: it is kept in tables,
read and written by each batch of checks in one transaction, one batch at a time across the
whole service (SQLite's single writer; a table lock on PostgreSQL). A line posted to one
process is then seen by a check that reaches another.

It stays bounded as it was in memory: per provider, the ``HISTORY_LINES`` lines with the
latest service dates; per caller, the last ``INVOICES_KEPT`` invoices posted (a caller's
invoices are never another's); nothing older than ``KEPT_SECONDS`` since it was posted. Rows
belong to the run they were checked against and go with it.
"""

from __future__ import annotations

import bisect
import fcntl
import json
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as clock
from itertools import islice
from operator import itemgetter
from typing import Any

import polars as pl
import sqlalchemy as sa

from api import tables as t
from data_contracts import TABLES
from data_contracts.records import Row

HISTORY_LINES = 200
INVOICES_KEPT = 10_000
KEPT_SECONDS = 24 * 3600.0
TIDY_SECONDS = 60.0  # how often a process deletes what is too old or too many
PROVIDERS_HELD = 10_000  # providers whose lines a process holds

_DECODERS: dict[type[pl.DataType], Callable[[str], Any]] = {
    pl.Date: date.fromisoformat,
    pl.Time: clock.fromisoformat,
    pl.Datetime: datetime.fromisoformat,
}


def _isoformat(value: date | clock) -> str:
    if isinstance(value, date | clock):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a value of a contract's row")


# Dates, times and datetimes as ISO text (``_decoder`` reads them back): the encoder asks only
# for what JSON cannot write, where rewriting each row first took a third of the time.
_encode: Callable[[Row], str] = json.JSONEncoder(default=_isoformat).encode


def _decoder(table: str) -> Callable[[str], Row]:
    """Rows of ``table`` back from their JSON, typed as validation typed them."""
    parsers = {
        name: _DECODERS[dtype.base_type()]
        for name, dtype in TABLES[table].dtypes.items()
        if dtype.base_type() in _DECODERS
    }

    def decode(text: str) -> Row:
        row: Row = json.loads(text)
        for name, parse in parsers.items():
            if row.get(name) is not None:
                row[name] = parse(row[name])
        return row

    return decode


_line, _invoice = _decoder("billing_lines"), _decoder("third_party_invoices")


@dataclass(frozen=True)
class _Stored:
    """A stored line as a process holds it: its id, when it was posted, and the line."""

    id: int
    posted_at: float
    line: Row


@dataclass
class _Held:
    """What a process holds of a provider's stored lines: every one with an id up to
    ``seen``, by claim, and kept in the order a check chooses its recent lines in.

    That order is by service date, ties in the order the process first held each claim (a
    claim stored anew keeps its place). It is kept sorted as lines come and go, so that a
    check takes the latest lines from its end instead of sorting hundreds of lines each time.
    """

    seen: int = 0
    rows: dict[str, _Stored] = field(default_factory=dict)  # by claim, in the order first held
    order: list[tuple[date, int, str]] = field(default_factory=list)  # (service date, place, claim), sorted
    places: dict[str, int] = field(default_factory=dict)  # by claim
    placed: int = 0  # places given so far
    oldest: float = math.inf  # at most the earliest time a held line was posted

    def put(self, claim: str, stored: _Stored) -> None:
        """Hold ``stored`` as ``claim``'s line, in the place of the line it replaces."""
        held = self.rows.get(claim)
        if held is None:
            place = self.places[claim] = self.placed
            self.placed += 1
        else:
            place = self.places[claim]
            del self.order[bisect.bisect_left(self.order, (held.line["service_date"], place, claim))]
        bisect.insort(self.order, (stored.line["service_date"], place, claim))
        self.rows[claim] = stored
        self.oldest = min(self.oldest, stored.posted_at)

    def earliest(self, count: int) -> list[_Stored]:
        """Let go of all but the latest ``count`` lines, whatever their age; those let go."""
        dropped, self.order = self.order[:-count], self.order[-count:]
        for _, _, claim in dropped:
            del self.places[claim]
        return [self.rows.pop(claim) for _, _, claim in dropped]

    def recent(self, cutoff: float, count: int, days: Collection[date] | None = None) -> list[_Stored]:
        """The latest ``count`` lines posted at ``cutoff`` or later (in the order first held
        when there are no more, else by service date); of those, only the ones served on
        ``days`` when given, found without looking at the others."""
        if self.oldest < cutoff:  # some line may be too old: look again
            self.oldest = min((s.posted_at for s in self.rows.values()), default=math.inf)
        if self.oldest < cutoff:
            kept = self._kept(cutoff, count)
            return kept if days is None else [s for s in kept if s.line["service_date"] in days]
        if days is None:
            if len(self.rows) <= count:
                return list(self.rows.values())
            return [self.rows[claim] for _, _, claim in self.order[-count:]]
        first = max(0, len(self.order) - count)  # the latest lines start there
        found = [
            entry
            for day in sorted(days)
            for entry in self.order[
                max(first, bisect.bisect_left(self.order, (day,))) : bisect.bisect_right(self.order, (day, math.inf))
            ]
        ]
        if len(self.rows) <= count:
            found.sort(key=itemgetter(1))  # the order first held
        return [self.rows[claim] for _, _, claim in found]

    def _kept(self, cutoff: float, count: int) -> list[_Stored]:
        """:meth:`recent` when some held line is too old."""
        kept = [s for s in self.rows.values() if s.posted_at >= cutoff]
        if len(kept) <= count:
            return kept
        latest = (self.rows[claim] for _, _, claim in reversed(self.order))
        return list(islice((s for s in latest if s.posted_at >= cutoff), count))[::-1]


# The statements of every batch, built once (building one costs about as much as running it).
_rl = t.realtime_lines.c
_NEW_LINES = sa.select(_rl.id, _rl.provider_nihdi, _rl.claim_id, _rl.posted_at, _rl.line).where(
    _rl.run_id == sa.bindparam("run"),
    _rl.provider_nihdi.in_(sa.bindparam("providers", expanding=True)),
    _rl.id > sa.bindparam("since"),
)
# Stored lines are deleted by id, a batch's in one statement: on PostgreSQL, deleting a 2 000-line
# check's lines one by one took 0.6 s, each delete twice as slow as in a 300-line check; and
# a statement per provider cost a 1 000-line check for 63 providers 63 statements.
_SOME_LINES = t.realtime_lines.delete().where(_rl.id.in_(sa.bindparam("ids", expanding=True)))
IDS_PER_DELETE = 5_000  # well within SQLite's and PostgreSQL's limits on parameters
# Each stored line says whose it is: asking for the ids in the order of the lines made
# SQLAlchemy insert them one statement each on SQLite, which has no column to sort them by.
_STORE_LINES = t.realtime_lines.insert().returning(_rl.id, _rl.provider_nihdi, _rl.claim_id)
_EXPIRED = [
    table.delete().where(table.c.posted_at < sa.bindparam("cutoff"))
    for table in (t.realtime_lines, t.realtime_invoices)
]


def _kept_already() -> None:
    """Keeping no posted lines: nothing to store."""


def _owned(line: Row) -> tuple[str, str]:
    """A line's key in the history: its provider and claim."""
    return line["provider_nihdi"], line["claim_id"]


class History:
    """One run's real-time history, read and changed within a batch's transaction.

    A provider's recent lines are needed again by each of its checks, and reading and
    decoding them all would cost more than the check, so each process holds those it read
    (``_Held``) and reads only the lines stored since (their ``id`` is never reused). A line
    another process deleted needs no reading: a claim posted again is stored anew, and a
    trimmed line is older than the ``HISTORY_LINES`` a check uses."""

    def __init__(self, run_id: str, kept_seconds: float = KEPT_SECONDS) -> None:
        self.run_id = run_id
        self.kept_seconds = kept_seconds
        self._held: OrderedDict[str, _Held] = OrderedDict()  # by provider, the last used last
        self._tidied_at = 0.0

    @contextmanager
    def transaction(self, engine: sa.Engine, entries: list[dict[str, Any]]) -> Iterator[sa.Connection]:
        """A transaction that holds the history until it commits, with the batch's audit-log
        ``entries`` written first."""
        with self._queue(engine), engine.begin() as connection:
            self._begin(connection, entries)
            yield connection

    @contextmanager
    def _queue(self, engine: sa.Engine) -> Iterator[None]:
        """On a SQLite file, wait for the batch before to commit on a lock file: SQLite's own
        wait for its write lock sleeps 1, 2, 5, 10 ms and more between tries, where a lock
        file wakes the next batch as soon as the one before commits."""
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.history-lock", "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # let go when the file is closed
            yield

    def _begin(self, connection: sa.Connection, entries: list[dict[str, Any]]) -> None:
        """Take the history (other batches wait until this transaction commits) and write the
        audit ``entries``. The first statement writes, so that SQLite gives the write lock
        now rather than fail a reader that writes later; what is too old or too many is
        deleted now and then (reads skip what is too old meanwhile)."""
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("LOCK TABLE realtime_lines, realtime_invoices IN EXCLUSIVE MODE"))
        if entries:
            connection.execute(t.audit_log.insert(), entries)
        now = time.time()
        if now - self._tidied_at > TIDY_SECONDS:
            self._tidy(connection, now)
        elif not entries:
            self._expire(connection, now)

    def invoices(self, connection: sa.Connection, caller: str, ids: Iterable[str]) -> dict[str, Row]:
        """The invoices among ``ids`` that ``caller`` posted (never another caller's)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        ri = t.realtime_invoices.c
        stored = connection.execute(
            sa.select(ri.invoice_id, ri.invoice).where(
                ri.run_id == self.run_id, ri.caller == caller, ri.invoice_id.in_(wanted), ri.posted_at >= self._cutoff()
            )
        ).all()
        return {invoice_id: _invoice(text) for invoice_id, text in stored}

    def post_invoices(self, connection: sa.Connection, caller: str, posted: list[Row]) -> None:
        """Keep ``posted`` for ``caller``'s next checks (an invoice posted again is replaced)."""
        if not posted:
            return
        ri = t.realtime_invoices.c
        ids = [invoice["invoice_id"] for invoice in posted]
        connection.execute(
            t.realtime_invoices.delete().where(ri.run_id == self.run_id, ri.caller == caller, ri.invoice_id.in_(ids))
        )
        now, seq = time.time(), time.time_ns()
        latest = {invoice["invoice_id"]: (n, invoice) for n, invoice in enumerate(posted)}  # the last of each id
        rows = [
            {
                "run_id": self.run_id,
                "caller": caller,
                "invoice_id": i,
                "seq": seq + n,
                "posted_at": now,
                "invoice": _encode(invoice),
            }
            for i, (n, invoice) in latest.items()
        ]
        connection.execute(t.realtime_invoices.insert(), rows)

    def lines(
        self, connection: sa.Connection, posted: list[Row], same_day: bool = False
    ) -> tuple[list[Row], Callable[[], None]]:
        """The recent lines of the providers of ``posted`` (each provider's latest
        ``HISTORY_LINES``), only those served on the day of one of their provider's ``posted``
        lines when ``same_day``, with ``posted`` (a claim posted again replaces it); and the
        call that keeps ``posted`` for the next checks, to be made in the same transaction (a
        batch's rules can run meanwhile: they need the recent lines only)."""
        if not posted:
            return [], _kept_already
        now = time.time()
        days: dict[str, set[date]] = defaultdict(set)
        for line in posted:
            days[line["provider_nihdi"]].add(line["service_date"])
        held = {provider: self._holding(provider) for provider in days}
        self._read_new(connection, held)
        context: dict[str, Row] = {}
        cutoff = now - self.kept_seconds
        for provider, holding in held.items():
            recent = holding.recent(cutoff, HISTORY_LINES, days[provider] if same_day else None)
            context |= {s.line["claim_id"]: s.line for s in recent}
        context |= {line["claim_id"]: line for line in posted}
        return list(context.values()), lambda: self._keep(connection, posted, held, now)

    def _holding(self, provider: str) -> _Held:
        """What this process holds of ``provider``'s lines."""
        holding = self._held.pop(provider, None) or _Held()
        self._held[provider] = holding
        while len(self._held) > PROVIDERS_HELD:
            self._held.popitem(last=False)
        return holding

    def _read_new(self, connection: sa.Connection, held: dict[str, _Held]) -> None:
        """Read the lines stored since what each holding holds (one query for them all)."""
        since = min(holding.seen for holding in held.values())
        rows = connection.execute(_NEW_LINES, {"run": self.run_id, "providers": list(held), "since": since})
        newest = {provider: holding.seen for provider, holding in held.items()}
        for line_id, provider, claim_id, posted_at, text in rows:
            holding = held[provider]
            if line_id > holding.seen:
                known = holding.rows.get(claim_id)
                if known is None or known.id < line_id:
                    holding.put(claim_id, _Stored(line_id, posted_at, _line(text)))
                newest[provider] = max(newest[provider], line_id)
        for provider, holding in held.items():
            holding.seen = newest[provider]

    def _keep(self, connection: sa.Connection, posted: list[Row], held: dict[str, _Held], now: float) -> None:
        """Store ``posted`` (a claim stored before is stored anew under a new id, for the other
        processes to read), and trim a provider's stored lines to its latest
        ``HISTORY_LINES`` once there are twice as many."""
        latest = {_owned(line): line for line in posted}
        # A process holds every stored line of its providers, but those it deleted itself (a
        # line another process deleted is no longer there to replace).
        self._delete(connection, [held[p].rows[c].id for p, c in latest if c in held[p].rows])
        rows = [
            {
                "run_id": self.run_id,
                "provider_nihdi": provider,
                "claim_id": claim_id,
                "posted_at": now,
                "line": _encode(line),
            }
            for (provider, claim_id), line in latest.items()
        ]
        stored = {
            (provider, claim_id): line_id for line_id, provider, claim_id in connection.execute(_STORE_LINES, rows)
        }
        for (provider, claim_id), line in latest.items():
            line_id = stored[provider, claim_id]
            holding = held[provider]
            holding.put(claim_id, _Stored(line_id, now, line))
            holding.seen = max(holding.seen, line_id)
        trimmed = [
            old.id
            for holding in held.values()
            if len(holding.rows) > 2 * HISTORY_LINES
            for old in holding.earliest(HISTORY_LINES)
        ]
        self._delete(connection, trimmed)

    def _delete(self, connection: sa.Connection, ids: list[int]) -> None:
        """Delete the stored lines of these ids. A process holds the id of each line it holds,
        and a claim's line only (the database keeps one per claim): deleting the one held
        deletes the claim's, unless another process did first."""
        for start in range(0, len(ids), IDS_PER_DELETE):
            connection.execute(_SOME_LINES, {"ids": ids[start : start + IDS_PER_DELETE]})

    def _cutoff(self) -> float:
        return time.time() - self.kept_seconds

    def _expire(self, connection: sa.Connection, now: float) -> None:
        """Delete what was posted more than ``kept_seconds`` ago."""
        for expired in _EXPIRED:
            connection.execute(expired, {"cutoff": now - self.kept_seconds})

    def _tidy(self, connection: sa.Connection, now: float) -> None:
        """Delete what is older than ``kept_seconds``, and each caller's invoices beyond the
        last ``INVOICES_KEPT`` posted."""
        self._expire(connection, now)
        ri = t.realtime_invoices.c
        crowded = connection.execute(
            sa.select(ri.run_id, ri.caller).group_by(ri.run_id, ri.caller).having(sa.func.count() > INVOICES_KEPT)
        ).all()
        for run_id, caller in crowded:
            mine = (ri.run_id == run_id) & (ri.caller == caller)
            oldest_kept = (
                sa.select(ri.seq)
                .where(mine)
                .order_by(ri.seq.desc())
                .offset(INVOICES_KEPT - 1)
                .limit(1)
                .scalar_subquery()
            )
            connection.execute(t.realtime_invoices.delete().where(mine, ri.seq < oldest_kept))
        self._tidied_at = now

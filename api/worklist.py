"""The worklist of a published run, held in memory: filtered, sorted and paged without SQL.

A run's flagged providers never change once published, and there is one row per provider
(tens of thousands nationally), so each server process reads them once per run and answers
every worklist page from memory: a filter is a boolean mask, each sort order a permutation
computed once, a page a slice of the permuted matches. On SQLite the same pages cost 4 to
50 ms of SQL each (the filters defeat the sort indexes), which was most of a request's time
under load; from memory a page costs well under a millisecond, whatever the filters.
"""

from __future__ import annotations

import gc
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa

from api import tables as t
from api.pseudonyms import pseudonym
from api.queries import NEWEST_RUN

# Sort keys of the worklist; ties are broken by provider number, ascending.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "amount": ("amount_at_stake_eur",),
    "score": ("score",),
    "lines": ("lines_flagged",),
    "persistence": ("persistence", "score"),
    "provider": ("provider_nihdi",),
}
LISTS = ("rules", "insurers", "years")  # stored comma-wrapped (",A,B,"), answered as lists
FILTERED = (*LISTS, "profession", "region")  # filtered on by value
HIDDEN = ("run_id",)
RUNS_KEPT = 4  # runs held per process; a run is a few MB per ten thousand providers
PAGES_KEPT = 4096  # per run, the provider pages last asked for (a few kB each)


@dataclass(frozen=True)
class Filters:
    """What the worklist can be narrowed to; ``None`` (or an empty string) narrows nothing."""

    rule: str | None = None
    profession: str | None = None
    region: str | None = None
    insurer: str | None = None
    year: int | None = None
    min_score: float | None = None
    min_amount: float | None = None
    min_persistence: int | None = None


class Worklist:
    """One run's flagged providers as columns: values to answer with, arrays to filter and sort.

    Each sort order and each "has this value" mask (of a rule, insurer, year, profession,
    region) is computed the first time it is asked for and kept with the run.
    """

    def __init__(self, providers: pl.DataFrame) -> None:
        self.size = providers.height
        self._frame = providers
        shown = [c for c in providers.columns if c not in HIDDEN]
        # Each row as the JSON a page answers with, rendered once: a page joins fifty of them.
        self._rows: list[str] = providers.select(pl.struct(shown).struct.json_encode()).to_series().to_list()
        numbers = ("score", "amount_at_stake_eur", "persistence")
        self._numbers = {c: providers[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in numbers}
        self._orders: dict[tuple[str, str], np.ndarray] = {}
        self._position = {nihdi: i for i, nihdi in enumerate(providers["provider_nihdi"])}
        self._pages: OrderedDict[str, Any] = OrderedDict()
        self._pages_lock = threading.Lock()
        self._having: dict[tuple[str, str], np.ndarray] = {}
        # Only values the run has get a mask kept: any other matches nobody, and asking
        # for arbitrary ones must not grow the process.
        self._known = {
            c: set(providers[c].explode().drop_nulls().cast(pl.String) if c in LISTS else providers[c].drop_nulls())
            for c in FILTERED
        }
        self._pseudonymised: Worklist | None = None
        # Of a pseudonymised view: each pseudonym's provider number.
        self.numbers: dict[str, str] = {}

    def pseudonymised(self, key: bytes) -> Worklist:
        """The same worklist with every provider number replaced by its pseudonym under
        ``key`` (one key per process): filtered, sorted and paged the same way, by pseudonym."""
        with self._pages_lock:
            if self._pseudonymised is None:
                numbers = self._frame["provider_nihdi"].to_list()
                names = [pseudonym(n, key) for n in numbers]  # once per run and process
                view = Worklist(self._frame.with_columns(pl.Series("provider_nihdi", names, pl.String)))
                view.numbers = dict(zip(names, numbers, strict=True))
                self._pseudonymised = view
            return self._pseudonymised

    def provider(self, nihdi: str) -> dict[str, Any] | None:
        """The provider's row (as a page gives it), or None if the run does not know it."""
        at = self._position.get(nihdi)
        return None if at is None else json.loads(self._rows[at])

    def remembered(self, nihdi: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` for a provider of this run, kept for the ``PAGES_KEPT`` last asked for
        (what a published run says of a provider never changes); an error is not kept."""
        with self._pages_lock:
            if nihdi in self._pages:
                self._pages.move_to_end(nihdi)
                return self._pages[nihdi]
        page = compute()
        with self._pages_lock:
            self._pages[nihdi] = page
            while len(self._pages) > PAGES_KEPT:
                self._pages.popitem(last=False)
        return page

    def order(self, sort: str, order: str) -> np.ndarray:
        """Row positions in ``sort`` order (nulls last either way, then by provider)."""
        key = (sort, order)
        if key not in self._orders:
            keys = [*SORT_KEYS[sort], "provider_nihdi"]
            descending = [order == "desc"] * (len(keys) - 1) + [False]
            if sort == "provider":
                keys, descending = ["provider_nihdi"], [order == "desc"]
            by = pl.arg_sort_by(keys, descending=descending, nulls_last=True, maintain_order=True)
            self._orders[key] = self._frame.select(by).to_series().to_numpy()
        return self._orders[key]

    def having(self, column: str, value: str) -> np.ndarray:
        """Which providers have ``value`` in ``column`` (equal to it, or in its list)."""
        key = (column, value)
        if value not in self._known[column]:
            return np.zeros(self.size, dtype=bool)
        if key not in self._having:
            values = pl.col(column)
            has = values.list.contains(value) if column in LISTS else values == value
            self._having[key] = self._frame.select(has.fill_null(False)).to_series().to_numpy()
        return self._having[key]

    def matching(self, filters: Filters) -> np.ndarray:
        """Which providers pass every filter given."""
        keep = np.ones(self.size, dtype=bool)
        for column, value in (
            ("rules", filters.rule),
            ("profession", filters.profession),
            ("region", filters.region),
            ("insurers", filters.insurer),
            ("years", filters.year),
        ):
            if value is not None and value != "":
                keep &= self.having(column, str(value))
        for column, bound in (
            ("score", filters.min_score),
            ("amount_at_stake_eur", filters.min_amount),
            ("persistence", filters.min_persistence),
        ):
            if bound is not None:
                keep &= self._numbers[column] >= bound  # a missing score (NaN) never passes
        return keep

    def page(self, filters: Filters, sort: str, order: str, number: int, size: int) -> tuple[int, list[str]]:
        """How many providers match ``filters``, and page ``number`` of them in that order
        (each provider's row as JSON)."""
        positions = self.order(sort, order)
        matching = positions[self.matching(filters)[positions]]
        return len(matching), [self._rows[i] for i in matching[(number - 1) * size : number * size].tolist()]


def _read(connection: sa.Connection, run: str) -> pl.DataFrame:
    fp = t.flagged_providers
    rows = connection.execute(sa.select(fp).where(fp.c.run_id == run))
    frame = pl.DataFrame(t.records(rows), schema={str(c.name): _dtype(c) for c in fp.columns})
    split = (pl.col(c).str.strip_chars(",").str.split(",").list.filter(pl.element() != "") for c in LISTS)
    return frame.with_columns(split)


def _dtype(column: sa.Column[Any]) -> pl.DataType:
    kind = column.type.python_type
    return pl.Int64() if kind is int else pl.Float64() if kind is float else pl.String()


class Worklists:
    """The worklists of the last few runs asked for, per process; each read once."""

    def __init__(self, kept: int = RUNS_KEPT) -> None:
        self.kept = kept
        self._runs: OrderedDict[str, Worklist] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def runs(self) -> tuple[str, ...]:
        """The runs held, the one asked for last at the end."""
        return tuple(self._runs)

    def held(self, run: str) -> Worklist | None:
        """``run``'s worklist if this process holds it already; None if it must be read."""
        with self._lock:
            found = self._runs.get(run)
            if found is not None:
                self._runs.move_to_end(run)
            return found

    def of(self, connection: sa.Connection, run: str) -> Worklist:
        """``run``'s worklist, read on ``connection`` the first time (one reader at a time)."""
        with self._lock:
            if run not in self._runs:
                self._runs[run] = Worklist(_read(connection, run))
                while len(self._runs) > self.kept:
                    self._runs.popitem(last=False)
                # What is held now lives long: the cyclic garbage collector need not walk it
                # again (a full collection over a run of 50 000 providers stalled the process
                # 160 ms, the slowest of its requests). Reference counting still frees it.
                gc.freeze()
            self._runs.move_to_end(run)
            return self._runs[run]

    def warm(self, engine: sa.Engine) -> None:
        """Read the newest run's worklist and compute its sort orders now, so that the first
        requests after a start do not wait for them (nothing to do before a first run)."""
        with engine.begin() as connection:
            newest = connection.execute(sa.select(NEWEST_RUN)).scalar()
            if newest is None:
                return
            worklist = self.of(connection, newest)
        for sort in SORT_KEYS:
            for order in ("desc", "asc"):
                worklist.order(sort, order)

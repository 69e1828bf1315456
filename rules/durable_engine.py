"""The catalog on durable_rules: each line a fact, each check compiled to pattern-matching rules.

A second back end for the same declarations as ``rules/shapes.py``. Polars computes the
enriched line and the values a pattern matcher cannot (each regime's deadline, a sort rank,
a duplicate key); the decisions are durable_rules patterns compiled from the catalog's
conditions (``rules/conditions.py``):

- ``line_predicate`` and ``deadline``: one pattern over the line per alternative of the
  condition (a regime applies when its condition holds and no earlier one does);
- ``reference_period``: a join of a reference fact (suspension, debt, status) and a line
  fact; with a ``total``, the matched rows' values are added up after the session, as the
  matcher cannot sum;
- ``burst``: a chain of ``min_run`` line facts, each within the gap of the previous one;
- ``duplicate_key``: a join of two lines with the same key, the later one flagged.

durable_rules keeps global state per ruleset and polls it from two daemon threads per host,
so one host serves the process and each catalog × legislation is registered once. Each rule
is its own ruleset, whose facts carry only the columns that rule reads; each provider's facts
are asserted into the ruleset's one session and retracted afterwards, under a lock.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Any, TypeVar

import durable_rules_engine
import polars as pl
import polars.selectors as cs
from durable import engine as durable

from rules import derived
from rules.catalog import (
    BurstCheck,
    Catalog,
    Check,
    DeadlineCheck,
    DuplicateKeyCheck,
    LinePredicateCheck,
    ReferencePeriodCheck,
    RuleDeclaration,
    load_catalog,
)
from rules.conditions import (
    Atom,
    Column,
    Compare,
    Conjunction,
    IsNull,
    columns_of,
    disjunctive_form,
    mirrored,
    not_true_form,
)
from rules.context import NO_LINES
from rules.derived import Derive
from rules.durable_worker import WorkerPool
from rules.engine import enriched_lines, flags_table, follow_timeline, no_flags, one_flag_per_line
from rules.errors import RuleError
from rules.shapes import reference_total_evidence, regime_deadline, regime_deadline_twin, years_after_columns

LINE = "billing_lines"
# Marks the lines whose flags are asked for (see ``DurableRuleset.relevant``).
POSTED = "_posted"
# Every join in the catalog stays within one provider, so each provider is its own session:
# joins stay small and the state of one is dropped before the next.
SESSION_KEY = "provider_nihdi"
# durable_rules' delete_state corrupts its heap (a segmentation fault some sessions later),
# and a session left behind keeps about a megabyte. So each ruleset has one session for the
# life of the process: a provider's facts are asserted into it, then retracted.
_SID = "provider"
_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}
_MS_PER_MINUTE = 60_000
# durable_rules_engine.assert_fact's result codes besides 0 (actions to run on a state).
_NOT_HANDLED, _OBSERVED, _NO_STATE = 1, 2, 3


def _derived(rule: RuleDeclaration, index: int, name: str) -> str:
    return f"_{rule.id}_{index}_{name}"


# ---------------------------------------------------------------------------------------
# Patterns: atoms rendered as durable_rules conditions for one fact of a join.


@dataclass
class _Pattern:
    """Atoms on one fact (``alias``) of a rule; ``owner`` says which fact holds a column."""

    alias: str
    kind: str
    owner: Callable[[str], tuple[str, str]]
    terms: list[dict[str, Any]] = field(default_factory=list)

    def field_name(self, column: str) -> str:
        alias, name = self.owner(column)
        if alias != self.alias:
            msg = f"column {column!r} is not on fact {self.alias!r}"
            raise RuleError(msg)
        return name

    def add(self, atom: Atom) -> None:
        if isinstance(atom, IsNull):
            self.terms.append({"$ex" if atom.negated else "$nex": {self.field_name(atom.column): 1}})
            return
        if not isinstance(atom.left, Column) or self.owner(atom.left.name)[0] != self.alias:
            atom = mirrored(atom)
        left = self.field_name(atom.left.name)  # type: ignore[union-attr]
        right: Any = atom.right
        if isinstance(right, Column):
            alias, name = self.owner(right.name)
            right = {"$m" if alias == self.alias else alias: name}
            if alias == self.alias:
                self.terms.append({"$ex": {name: 1}})
        self.terms.append({"$ex": {left: 1}})
        self.terms.append({left: right} if atom.op == "=" else {_OPS[atom.op]: {left: right}})

    def definition(self) -> dict[str, Any]:
        return {self.alias: {"$and": [{"_kind": self.kind}, *self.terms]}}


def _owned_by(alias: str) -> Callable[[str], tuple[str, str]]:
    """Every column on one fact: the owner for patterns over a single line."""
    return lambda column: (alias, column)


_line_owner = _owned_by("m")


def _place(atoms: Iterable[Atom], patterns: dict[str, _Pattern], owner: Callable[[str], tuple[str, str]]) -> None:
    """Put each atom on the fact of the join that can test it: the last one it mentions."""
    order = list(patterns)
    for atom in atoms:
        aliases = {owner(c)[0] for c in columns_of(atom)} or {order[-1]}
        last = max(aliases, key=order.index)
        # A comparison needs its columns on the fact it references to exist too.
        for alias in aliases - {last}:
            for column in columns_of(atom):
                if owner(column)[0] == alias:
                    patterns[alias].add(IsNull(column, negated=True))
        patterns[last].add(atom)


# ---------------------------------------------------------------------------------------
# Firings: what a rule's action records, turned into flags after the session.


@dataclass(frozen=True)
class _Firing:
    line: int
    reason: str
    extras: tuple[tuple[str, Any], ...] = ()


@dataclass
class _CompiledCheck:
    rule: RuleDeclaration
    index: int
    check: Check
    legislation: str
    firings: list[Any] = field(default_factory=list)


def ruleset_prefix(catalog: Catalog, legislation: str) -> str:
    """Names the rulesets of one catalog under one legislation (they are registered once)."""
    return f"secm_{catalog.version}_{legislation}"


class DurableRuleset:
    """A catalog under one legislation, registered once as a durable_rules ruleset."""

    def __init__(
        self, catalog: Catalog, legislation: str, line_columns: Iterable[str], tables: Mapping[str, list[str]]
    ):
        catalog.check_legislation(legislation)
        self.catalog, self.legislation = catalog, legislation
        self.line_columns = set(line_columns)
        self.table_columns = tables
        self.checks: list[_CompiledCheck] = []
        # The line and derived columns the rule being compiled reads; each ruleset's facts carry
        # only its own rule's (durable_rules keeps at most 32 properties per fact, unchecked).
        self.fact_columns: set[str] = set()
        self.columns_of: dict[str, set[str]] = {}
        self._twins: dict[tuple[tuple[str, pl.DataType], ...], Any] = {}  # see ``derived_in_python``
        prefix = ruleset_prefix(catalog, legislation)
        # One durable_rules ruleset per rule: its engine fails on rulesets of a few dozen rules.
        self.rulesets: dict[str, dict[str, Any]] = {}
        # The reference tables each ruleset joins: only their facts are asserted into it.
        self.references_of: dict[str, set[str]] = defaultdict(set)
        for rule in catalog:
            name = f"{prefix}_{rule.id}"
            self.fact_columns = {"_i"}
            for index, check in enumerate(rule.checks):
                compiled = _CompiledCheck(rule, index, check, legislation)
                self.checks.append(compiled)
                if isinstance(check, ReferencePeriodCheck):
                    self.references_of[name].add(check.table)
                for number, (patterns, action) in enumerate(self._rules(compiled)):
                    self.rulesets.setdefault(name, {})[f"{index}_{number}"] = {
                        "all": patterns,
                        "run": action,
                    }
            self.columns_of[name] = self.fact_columns

    # -- compilation ------------------------------------------------------------------

    def _alternatives(self, rule: RuleDeclaration, text: str | None, *, negated: bool = False) -> list[Conjunction]:
        if not text:
            return [()]
        form = not_true_form if negated else disjunctive_form
        alternatives = form(rule.sql_text(text, self.legislation))
        for conjunction in alternatives:
            for atom in conjunction:
                self.fact_columns |= columns_of(atom) & self.line_columns
        return alternatives

    def _rules(self, compiled: _CompiledCheck) -> Iterable[tuple[list[dict[str, Any]], Action]]:
        check, rule = compiled.check, compiled.rule
        sink = compiled.firings
        _check_session_key(rule, check)
        self.fact_columns.add(SESSION_KEY)
        if isinstance(check, LinePredicateCheck):
            reason_column = check.reason_column
            if reason_column:
                self.fact_columns.add(reason_column)
            for conjunction in self._alternatives(rule, check.when):
                pattern = _Pattern("m", LINE, _line_owner)
                _place(conjunction, {"m": pattern}, _line_owner)
                yield [pattern.definition()], _on_predicate(sink, check.reason, reason_column)
        elif isinstance(check, DeadlineCheck):
            yield from self._deadline_rules(compiled, check, rule, sink)
        elif isinstance(check, ReferencePeriodCheck):
            yield from self._reference_rules(check, rule, sink)
        elif isinstance(check, BurstCheck):
            yield from self._burst_rules(compiled, check, rule, sink)
        elif isinstance(check, DuplicateKeyCheck):
            yield self._duplicate_rule(compiled, sink)

    def _deadline_rules(
        self, compiled: _CompiledCheck, check: DeadlineCheck, rule: RuleDeclaration, sink: list[Any]
    ) -> Iterable[tuple[list[dict[str, Any]], Action]]:
        self.fact_columns.add(check.compare)
        for position, regime in enumerate(check.regimes):
            deadline = _derived(rule, compiled.index, regime.name)
            self.fact_columns.add(deadline)
            # A regime applies when its condition holds and no earlier one's does (CASE WHEN).
            applies = self._alternatives(rule, regime.when)
            earlier = [self._alternatives(rule, r.when, negated=True) for r in check.regimes[:position]]
            late = Compare(">", Column(check.compare), Column(deadline))
            for alternative in _product([applies, *earlier]):
                pattern = _Pattern("m", LINE, _line_owner)
                _place((*alternative, late), {"m": pattern}, _line_owner)
                yield [pattern.definition()], _on_late(sink, check.reason_prefix, regime.name, deadline)

    def _reference_rules(
        self, check: ReferencePeriodCheck, rule: RuleDeclaration, sink: list[Any]
    ) -> Iterable[tuple[list[dict[str, Any]], Action]]:
        reference = {*self.table_columns[check.table], *check.years_after}

        def owner(column: str) -> tuple[str, str]:
            if column in self.line_columns:
                return ("m", column)
            name = column.removesuffix("_reference")
            if name in reference:
                return ("r", name)
            msg = f"Rule {rule.id}: column {column!r} is neither on the line nor in {check.table}"
            raise RuleError(msg)

        end_op = "<=" if check.end_inclusive else "<"
        period = (
            f"{check.key} = {check.key}_reference AND {check.date} >= {check.start} "
            f"AND ({check.end} IS NULL OR {check.date} {end_op} {check.end})"
        )
        self.fact_columns |= {check.key, check.date}
        conditions = [period, *(c for c in (check.where, check.having) if c)]
        text = " AND ".join(f"({c})" for c in conditions)
        for conjunction in self._alternatives(rule, text):
            patterns = {"r": _Pattern("r", check.table, owner), "m": _Pattern("m", LINE, owner)}
            _place(conjunction, patterns, owner)
            yield [patterns["r"].definition(), patterns["m"].definition()], _on_period(sink, check.start)

    def _burst_rules(
        self, compiled: _CompiledCheck, check: BurstCheck, rule: RuleDeclaration, sink: list[Any]
    ) -> Iterable[tuple[list[dict[str, Any]], Action]]:
        seq = _derived(rule, compiled.index, "seq")
        order = _derived(rule, compiled.index, "order")
        gap = float(rule.resolve(check.max_gap_minutes, self.legislation)) * _MS_PER_MINUTE
        min_run = int(rule.resolve(check.min_run, self.legislation))
        self.fact_columns |= {*check.partition_by, seq, order}
        for conjunction in self._alternatives(rule, check.where):
            chain: list[dict[str, Any]] = []
            aliases = [f"p{k}" for k in range(min_run)]
            for k, alias in enumerate(aliases):
                pattern = _Pattern(alias, LINE, _owned_by(alias))
                _place(conjunction, {alias: pattern}, _owned_by(alias))
                if k:
                    # The line right after the previous one among the partition's lines that
                    # meet ``where``: any later one made chains grow as n³ for n lines (80 evening
                    # visits typed within the hour took 25 s).
                    previous = aliases[k - 1]
                    pattern.terms += [{column: {previous: column}} for column in check.partition_by]
                    pattern.terms.append({seq: {"$add": {"$l": {previous: seq}, "$r": 1}}})
                    pattern.terms.append({"$lt": {order: {"$add": {"$l": {previous: order}, "$r": gap}}}})
                chain.append(pattern.definition())
            yield chain, _on_chain(sink, aliases, order)

    def _duplicate_rule(self, compiled: _CompiledCheck, sink: list[Any]) -> tuple[list[dict[str, Any]], Action]:
        key = _derived(compiled.rule, compiled.index, "key")
        seq = _derived(compiled.rule, compiled.index, "seq")
        self.fact_columns |= {key, seq}
        # Each line is paired with the one just before it in its key group only: pairing it
        # with every earlier one fired n²/2 times for n lines sharing a key (75 s for 2 000).
        earlier = {"a": {"$and": [{"_kind": LINE}, {"$ex": {key: 1}}]}}
        next_one = {"$add": {"$l": {"a": seq}, "$r": 1}}
        later = {"b": {"$and": [{"_kind": LINE}, {key: {"a": key}}, {seq: next_one}]}}
        return [earlier, later], _on_pair(sink, seq)

    # -- facts ------------------------------------------------------------------------

    @cached_property
    def derived(self) -> tuple[list[pl.Expr], list[_Rank]]:
        """The values patterns cannot compute (built once: a real-time check's facts take less
        time to prepare than these expressions to build): each line's own (deadlines, burst
        times, duplicate keys), then the sort ranks over those."""
        exprs: list[pl.Expr] = []
        ranks: list[_Rank] = []
        for compiled in self.checks:
            check, rule, index = compiled.check, compiled.rule, compiled.index
            if isinstance(check, DeadlineCheck):
                exprs += [
                    regime_deadline(r, rule, self.legislation).alias(_derived(rule, index, r.name))
                    for r in check.regimes
                ]
            elif isinstance(check, BurstCheck):
                # The line's place among its partition's lines that meet ``where``, in time order.
                meets = _derived(rule, index, "meets")
                exprs.append(rule.sql(check.where, self.legislation).fill_null(False).alias(meets))
                exprs.append(pl.col(check.order_by).dt.epoch("ms").alias(_derived(rule, index, "order")))
                group = (*check.partition_by, meets)
                ranks.append(_Rank(_derived(rule, index, "seq"), group, (check.order_by, "claim_id"), 1))
            elif isinstance(check, DuplicateKeyCheck):
                parts = [pl.col(c).cast(pl.String).fill_null(_NULL_IN_KEY) for c in check.key]
                key = _derived(rule, index, "key")
                exprs.append(pl.concat_str(parts, separator=_KEY_SEPARATOR).alias(key))
                # The line's place in its key group (0 for the one kept), in keep-first order.
                ranks.append(_Rank(_derived(rule, index, "seq"), (key,), (*check.keep_first_by, "claim_id"), 0))
        return exprs, ranks

    def derived_in_python(self, schema: pl.Schema) -> tuple[list[tuple[str, Derive]], pl.Schema] | None:
        """``derived``'s values (its first part) as Python functions of a line, in its order
        (:mod:`rules.derived`), with the lines' schema and theirs; None when one has no twin
        for the columns' types in ``schema``. Built once per schema."""
        key = tuple(schema.items())
        if key not in self._twins:
            self._twins[key] = self._build_twins(schema)
        return self._twins[key]

    def _build_twins(self, schema: pl.Schema) -> tuple[list[tuple[str, Derive]], pl.Schema] | None:
        twins: list[tuple[str, Derive | None]] = []
        for compiled in self.checks:
            check, rule, index = compiled.check, compiled.rule, compiled.index
            if isinstance(check, DeadlineCheck):
                twins += [
                    (_derived(rule, index, r.name), regime_deadline_twin(r, rule, self.legislation))
                    for r in check.regimes
                ]
            elif isinstance(check, BurstCheck):
                where = rule.sql_text(check.where, self.legislation)
                twins.append((_derived(rule, index, "meets"), derived.condition(where, schema)))
                twins.append((_derived(rule, index, "order"), derived.epoch_milliseconds(check.order_by, schema)))
            elif isinstance(check, DuplicateKeyCheck):
                key = derived.key(check.key, schema, _NULL_IN_KEY, _KEY_SEPARATOR)
                twins.append((_derived(rule, index, "key"), key))
        known = [(name, twin) for name, twin in twins if twin is not None]
        if len(known) < len(twins):
            return None
        return known, pl.LazyFrame(schema=schema).with_columns(self.derived[0]).collect_schema()

    @cached_property
    def bearing(self) -> dict[str, list[tuple[str, ...]]]:
        """Per ruleset, the lines that could bear on the flags of the lines marked ``POSTED``:
        those sharing a group of these columns with one (none: the posted lines themselves).
        Every line bears on its own flags when none is marked: then no mask is needed.

        A check of one line needs only the posted lines; a duplicate key, the lines sharing
        a posted line's key; a burst, the lines of a posted line's partition. The derived
        ranks are computed over every line first, so that they are the same either way.
        """
        prefix = ruleset_prefix(self.catalog, self.legislation)
        groups: dict[str, list[tuple[str, ...]]] = {name: [] for name in self.rulesets}
        for compiled in self.checks:
            check, name = compiled.check, f"{prefix}_{compiled.rule.id}"
            if isinstance(check, DuplicateKeyCheck):
                groups[name].append((_derived(compiled.rule, compiled.index, "key"),))
            elif isinstance(check, BurstCheck):
                groups[name].append(tuple(check.partition_by))
            else:
                groups[name].append(())
        return groups

    @cached_property
    def ranked(self) -> list[pl.Expr]:
        """The sort ranks as Polars computes them over many lines (built once, as ``derived``)."""
        return [rank.expr() for rank in self.derived[1]]

    @cached_property
    def relevant(self) -> dict[str, pl.Expr]:
        """Per ruleset, its lines that could bear on the posted ones (see ``bearing``), as
        Polars marks them over many lines (built once, as ``derived``)."""
        is_posted = pl.col(POSTED)
        return {
            name: pl.any_horizontal([is_posted.any().over(g) if g else is_posted for g in groups])
            for name, groups in self.bearing.items()
        }


@dataclass(frozen=True)
class _Rank:
    """A line's place among the lines of its ``group`` in ``order`` (nulls first), counted from
    ``start``: a window in Polars over many lines, a sort in Python over a few (the same
    places, tested; a window costs a fraction of a millisecond however few the lines)."""

    name: str
    group: tuple[str, ...]
    order: tuple[str, ...]
    start: int

    def expr(self) -> pl.Expr:
        place = pl.arg_sort_by(*self.order).arg_sort().rank("ordinal").over(self.group)
        return (place.cast(pl.Int64) - 1 + self.start).alias(self.name)

    def places(self, rows: list[dict[str, Any]]) -> list[int]:
        """Each row's place."""
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[tuple(row[c] for c in self.group)].append(i)
        key = lambda i: tuple((rows[i][c] is not None, rows[i][c]) for c in self.order)  # noqa: E731
        places = [0] * len(rows)
        for members in groups.values():
            for place, i in enumerate(sorted(members, key=key), self.start):
                places[i] = place
        return places


def _bearing_rows(groups: list[tuple[str, ...]], rows: list[dict[str, Any]]) -> list[bool]:
    """Per row, whether it could bear on a posted row's flags (``DurableRuleset.relevant``)."""
    posted = [row for row in rows if row[POSTED]]
    shared = [{tuple(row[c] for c in g) for row in posted} for g in groups if g]
    keys = [g for g in groups if g]
    mine = len(keys) < len(groups)
    return [
        (mine and row[POSTED])
        or any(tuple(row[c] for c in g) in values for g, values in zip(keys, shared, strict=True))
        for row in rows
    ]


def _check_session_key(rule: RuleDeclaration, check: Check) -> None:
    keys = {
        ReferencePeriodCheck: lambda c: [c.key],
        BurstCheck: lambda c: c.partition_by,
        DuplicateKeyCheck: lambda c: c.key,
    }
    if type(check) in keys and SESSION_KEY not in keys[type(check)](check):
        msg = (
            f"Rule {rule.id}: the durable_rules back end joins lines within a provider, "
            f"so the {check.shape} key must include {SESSION_KEY}"
        )
        raise RuleError(msg)


# durable_rules calls an action with the session's context alone: each factory binds the rest.
# It also swallows what an action raises, so each one records its error for the session.
Action = Callable[[Any], None]
_ACTION_ERRORS: list[BaseException] = []


def _guarded(record: Action) -> Action:
    def action(c: Any) -> None:
        try:
            record(c)
        except Exception as exc:  # re-raised by run_session once the session is closed
            _ACTION_ERRORS.append(exc)

    return action


def _on_predicate(sink: list[Any], reason: str | None, column: str | None) -> Action:
    return _guarded(lambda c: sink.append(_Firing(c.m._i, reason or c.m[column])))


def _on_late(sink: list[Any], prefix: str, regime: str, deadline: str) -> Action:
    return _guarded(
        lambda c: sink.append(_Firing(c.m._i, prefix + regime, (("regime", regime), ("deadline", c.m[deadline]))))
    )


def _on_period(sink: list[Any], start: str) -> Action:
    return _guarded(lambda c: sink.append(_Firing(c.m._i, "", (("reference", c.r._r), ("start", c.r[start])))))


def _on_chain(sink: list[Any], aliases: list[str], order: str) -> Action:
    return _guarded(lambda c: sink.append(tuple((getattr(c, a)._i, getattr(c, a)[order]) for a in aliases)))


def _on_pair(sink: list[Any], seq: str) -> Action:
    return _guarded(lambda c: sink.append((c.b._i, c.a._i, c.a[seq])))


def _product(groups: list[list[Conjunction]]) -> list[Conjunction]:
    combined: list[Conjunction] = [()]
    for group in groups:
        combined = [(*left, *right) for left in combined for right in group]
    return combined


# ---------------------------------------------------------------------------------------
# Facts and sessions.


class _Host(durable.Host):  # type: ignore[misc]
    """A durable_rules host without its two polling threads.

    They dispatch timers and queued actions, which the catalog does not use, and they call
    into the engine while assert_fact runs in another thread: its C core is not thread-safe,
    and the race ends in a segmentation fault.
    """

    def _run(self) -> None:
        return None


_HOST: durable.Host | None = None
_LOCK = threading.Lock()
_REGISTERED: dict[str, DurableRuleset] = {}


Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


# Values durable_rules can compare: dates as day numbers, times in ns, datetimes in ms.
_ENCODED = (
    cs.date().cast(pl.Int32),
    cs.time().cast(pl.Int64),
    cs.datetime().dt.epoch("ms"),
    cs.decimal().cast(pl.Float64),
)


def _encode(frame: Frame) -> Frame:
    """``frame`` with values durable_rules can compare (``_ENCODED``)."""
    return frame.with_columns(*_ENCODED)


# A query over a few rows runs as Polars runs an eager method's: its optimiser's passes and
# engine choice cost more than the query (3 ms against 1.6 ms for one claim's lines).
_FEW_ROWS = pl.QueryOptFlags._eager()

# How a duplicate key writes a missing value, and what joins its columns.
_NULL_IN_KEY, _KEY_SEPARATOR = "~null~", "#|#"

# A fact: its id and its JSON, as the engine takes it.
Fact = tuple[str, str]
_AS_IS = "_as_is"  # see ``_few_line_facts``
# One encoder for every fact: ``json.dumps`` with options builds one per call.
_FACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# Up to this many lines × rulesets, line facts are prepared in Python (see ``_line_facts``):
# about 6 µs a fact, where Polars takes 8-9 ms for a few lines and 11 ms for 2 000 facts.
FACTS_ENCODED_ONE_BY_ONE = 1_500


def _fact_id(kind: str, number: pl.Expr) -> pl.Expr:
    return pl.format(f"{kind}:{{}}", number)


def _fact_json(columns: Sequence[str], kind: str, number: pl.Expr) -> pl.Expr:
    """Each row's fact as JSON, encoded by Polars (``json.dumps`` per fact was most of a large
    check's time); a null is an absent field, as ``IS NULL`` expects.

    Each fact has an explicit ``id``: without one durable_rules identifies a fact by a hash
    of its content, and two different lines may then be taken for the same fact.
    """
    identity = [pl.lit(kind).alias("_kind"), pl.lit(_SID).alias("sid"), _fact_id(kind, number).alias("id")]
    encoded = pl.struct(*columns, *identity).struct.json_encode()
    # Every column comes before the identity, which is never null: a null field ends in a comma.
    # Inside a string value a quote is escaped, so the pattern can only match a field.
    nullable = "|".join(re.escape(c) for c in columns)
    return encoded.str.replace_all(f'"(?:{nullable})":null,', "") if columns else encoded


def _facts(frame: pl.DataFrame, kind: str) -> dict[str, list[Fact]]:
    """One fact per row (every column), grouped by provider."""
    providers: dict[str, list[Fact]] = defaultdict(list)
    number = pl.int_range(pl.len())
    encoded = _encode(frame).select(
        SESSION_KEY,
        _fact_id(kind, number).alias("_id"),
        _fact_json(frame.columns, kind, number).alias("_fact"),
    )
    for provider, identity, fact in encoded.iter_rows():
        providers[provider].append((identity, fact))
    return providers


def _line_facts(ruleset: DurableRuleset, lines: pl.DataFrame, posted: pl.Series | None) -> dict[str, dict[str, list]]:
    """Per ruleset, its line facts by provider: each with that ruleset's columns only (see
    ``DurableRuleset.fact_columns``), and only the lines that bear on ``posted`` when given.

    The lines are prepared in one query for every ruleset: each query costs a fraction of a
    millisecond however few its rows. Many lines are then ranked, masked and encoded by
    Polars; a few (a real-time check) in Python, by ``_Rank.places``, ``_bearing_rows`` and
    ``_FACT_JSON``.
    """
    names = list(ruleset.columns_of)
    if lines.height * len(names) <= FACTS_ENCODED_ONE_BY_ONE:
        return _few_line_facts(ruleset, lines, posted)
    frame = _with_derived(ruleset, lines, posted)
    needed = sorted(set().union(*ruleset.columns_of.values()))
    if posted is None:
        masks = [pl.lit(True).alias(f"_in_{k}") for k in range(len(names))]
    else:
        masks = [ruleset.relevant[name].alias(f"_in_{k}") for k, name in enumerate(names)]
    prepared = _encode(frame.with_columns(ruleset.ranked).select(*needed, *masks))
    number = pl.int_range(pl.len())
    encoded = prepared.select(
        SESSION_KEY,
        _fact_id(LINE, number).alias("_id"),
        *(
            pl.when(f"_in_{k}").then(_fact_json(sorted(ruleset.columns_of[name]), LINE, number)).alias(f"_fact_{k}")
            for k, name in enumerate(names)
        ),
    ).collect()
    facts: dict[str, dict[str, list[Fact]]] = {name: defaultdict(list) for name in names}
    for provider, identity, *bodies in encoded.iter_rows():
        for name, body in zip(names, bodies, strict=True):
            if body is not None:
                facts[name][provider].append((identity, body))
    return facts


def _with_derived(ruleset: DurableRuleset, lines: pl.DataFrame, posted: pl.Series | None) -> pl.LazyFrame:
    """``lines`` with their derived values, and which are ``posted`` (``POSTED``) when given."""
    frame = lines.lazy().with_columns(ruleset.derived[0])
    if posted is None:
        return frame
    return frame.with_columns(pl.col("claim_id").is_in(posted.implode()).alias(POSTED))


def _few_line_facts(
    ruleset: DurableRuleset, lines: pl.DataFrame, posted: pl.Series | None
) -> dict[str, dict[str, list]]:
    """``_line_facts`` of a few lines: derived (by their Python twins where they have them),
    ranked, masked (when ``posted`` is given) and encoded in Python."""
    names = list(ruleset.columns_of)
    _, ranks = ruleset.derived
    fields = [sorted(ruleset.columns_of[name]) for name in names]
    # Ranked and grouped on the values as they are, beside the encoded ones: encoding would
    # truncate datetimes to the millisecond.
    compared = {c for r in ranks for c in r.group + r.order}
    if posted is not None:
        compared |= {POSTED, *(c for name in names for group in ruleset.bearing[name] for c in group)}
    read = set().union(*fields) - {r.name for r in ranks}
    rows = _prepared_rows(ruleset, lines, posted, sorted(read), sorted(compared))
    as_is = [row[_AS_IS] for row in rows]
    for rank in ranks:
        for row, place in zip(rows, rank.places(as_is), strict=True):
            row[rank.name] = place
    everyone = [True] * len(rows)
    masks = [_bearing_rows(ruleset.bearing[name], as_is) if posted is not None else everyone for name in names]
    facts: dict[str, dict[str, list[Fact]]] = {name: defaultdict(list) for name in names}
    for position, row in enumerate(rows):
        identity = f"{LINE}:{position}"
        for k, name in enumerate(names):
            if masks[k][position]:
                columns = {c: row[c] for c in fields[k] if row[c] is not None}
                body = {**columns, "_kind": LINE, "sid": _SID, "id": identity}
                facts[name][row[SESSION_KEY]].append((identity, _FACT_JSON(body)))
    return facts


def _prepared_rows(
    ruleset: DurableRuleset, lines: pl.DataFrame, posted: pl.Series | None, read: list[str], compared: list[str]
) -> list[dict[str, Any]]:
    """Per line, its ``read`` columns encoded for durable_rules (``_ENCODED``), and its
    ``compared`` ones as they are under ``_AS_IS``: by the derived values' Python twins where
    each has one, else by one Polars query (as an eager method runs it)."""
    twins = ruleset.derived_in_python(lines.schema)
    if twins is None:
        kept = [pl.struct(compared).alias(_AS_IS)] if compared else [pl.lit(None).alias(_AS_IS)]
        query = _encode(_with_derived(ruleset, lines, posted).select(*read, *kept))
        return list(query.collect(optimizations=_FEW_ROWS).iter_rows(named=True))
    derive, schema = twins
    encoders = [(c, e) for c in read if (e := derived.encoder(schema[c])) is not None]
    ids = set(posted.to_list()) if posted is not None else set()
    rows = []
    for line in lines.iter_rows(named=True):
        for name, twin in derive:
            line[name] = twin(line)
        if posted is not None:
            line[POSTED] = line["claim_id"] in ids
        row = {c: line[c] for c in read}
        for c, encode in encoders:
            row[c] = encode(row[c])
        row[_AS_IS] = {c: line[c] for c in compared} if compared else None
        rows.append(row)
    return rows


class References:
    """A run's reference tables as a worker keeps them (under ``key``), with what it derives
    from them once."""

    def __init__(self, key: Hashable, tables: Mapping[str, pl.DataFrame]) -> None:
        self.key = key
        self.tables = dict(tables)
        self._derived: dict[str, tuple[dict[str, pl.DataFrame], dict[tuple[str, str], list]]] = {}

    def facts(
        self, ruleset: DurableRuleset, tables: Mapping[str, pl.LazyFrame]
    ) -> tuple[dict[str, pl.DataFrame], dict[tuple[str, str], list]]:
        """The reference rows the checks join (see ``_references``) and their facts by provider."""
        key = ruleset_prefix(ruleset.catalog, ruleset.legislation)
        if key not in self._derived:
            self._derived[key] = _reference_facts(ruleset, tables)
        return self._derived[key]


def _registered(
    catalog: Catalog, legislation: str, lines: pl.DataFrame, tables: Mapping[str, pl.LazyFrame]
) -> DurableRuleset:
    global _HOST
    key = ruleset_prefix(catalog, legislation)
    if key not in _REGISTERED:
        columns = {name: list(frame.collect_schema()) for name, frame in tables.items()}
        ruleset = DurableRuleset(catalog, legislation, lines.columns, columns)
        _HOST = _HOST or _Host()
        for name, rules in ruleset.rulesets.items():
            # durable_rules takes each rule's action out of the definition it is given.
            _HOST.set_rulesets({name: {rule: dict(body) for rule, body in rules.items()}})
        _REGISTERED[key] = ruleset
    return _REGISTERED[key]


def _assert(host: durable.Host, name: str, facts: list[Fact]) -> None:
    """Assert ``facts`` one at a time.

    One at a time: a batch in which some fact matches nothing raises before the actions of
    the others have run, and they would be lost. ``Host.assert_fact`` takes a dict, encodes
    it, and encodes it again for the exception it raises when the fact matches nothing, the
    usual case (a clean line): so the engine's own call is made here with the fact already
    encoded, then the actions are run as ``Host.assert_fact`` runs them.
    """
    rules = host.get_ruleset(name)
    for _, fact in facts:
        _act(rules, durable_rules_engine.assert_fact(rules._handle, fact), fact)


def _retract(host: durable.Host, name: str, facts: list[Fact]) -> None:
    """Take a provider's facts back out of the ruleset's session, leaving it empty (in one
    engine call, encoded here: ``Host.retract_facts`` encoding a list of dicts took most of
    a retraction's time)."""
    rules = host.get_ruleset(name)
    identities = ",".join(f'{{"sid":"{_SID}","id":"{identity}"}}' for identity, _ in reversed(facts))
    message = f"[{identities}]"
    _act(rules, durable_rules_engine.retract_facts(rules._handle, message), message)


def _act(rules: durable.Ruleset, result: tuple[Any, ...], message: str) -> None:
    """Run the actions an engine call leaves, as ``durable``'s host runs them; a message that
    matches nothing leaves none."""
    code, state = result[:2]
    if code == _NOT_HANDLED:
        return
    if code == _OBSERVED:
        raise durable.MessageObservedException(message)
    failed: list[BaseException | None] = []
    rules.do_actions(0 if code == _NO_STATE else state, lambda error, _: failed.append(error))
    if failed[-1] is not None:
        raise failed[-1]


def _references(ruleset: DurableRuleset, tables: Mapping[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    """Each reference table the checks join, numbered by row, with every date they derive."""
    derived: dict[str, list[pl.Expr]] = defaultdict(list)
    for c in ruleset.checks:
        if isinstance(c.check, ReferencePeriodCheck):
            derived[c.check.table] += years_after_columns(c.check, c.rule, ruleset.legislation)
    return {
        table: tables[table].with_row_index("_r").with_columns(derived[table]).collect() for table in sorted(derived)
    }


def _reference_facts(
    ruleset: DurableRuleset, tables: Mapping[str, pl.LazyFrame]
) -> tuple[dict[str, pl.DataFrame], dict[tuple[str, str], list]]:
    """The reference rows the checks join, and their facts by ``(provider, table)``."""
    references = _references(ruleset, tables)
    facts = {
        (provider, table): facts
        for table, frame in references.items()
        for provider, facts in _facts(frame, table).items()
    }
    return references, facts


def run_session(
    ruleset: DurableRuleset,
    lines: pl.DataFrame,
    reference_facts: Mapping[tuple[str, str], list[Fact]],
    posted: pl.Series | None = None,
) -> dict[tuple[str, int], list[Any]]:
    """Assert the reference rows and lines in a fresh session; each check's firings.

    With ``posted`` (claim ids), each ruleset gets only the lines that could bear on theirs.
    """
    line_facts = _line_facts(ruleset, lines, posted)
    providers = dict.fromkeys(provider for facts in line_facts.values() for provider in facts)
    assert _HOST is not None
    with _LOCK:
        for compiled in ruleset.checks:
            compiled.firings.clear()
        _ACTION_ERRORS.clear()
        for provider in providers:
            for name in ruleset.rulesets:
                tables = sorted(ruleset.references_of[name])
                facts = [f for t in tables for f in reference_facts.get((provider, t), [])]
                facts += line_facts[name].get(provider, [])
                try:
                    _assert(_HOST, name, facts)
                finally:
                    _retract(_HOST, name, facts)
        if _ACTION_ERRORS:
            msg = f"A durable_rules action failed: {_ACTION_ERRORS[0]!r}"
            raise RuleError(msg) from _ACTION_ERRORS[0]
        return {(c.rule.id, c.index): list(c.firings) for c in ruleset.checks}


# ---------------------------------------------------------------------------------------
# From firings to flagged lines with evidence.

_DAY0 = date(1970, 1, 1)


def _json(values: Mapping[str, Any]) -> str:
    return json.dumps(values, default=str, ensure_ascii=False, separators=(",", ":"))


def _flagged(
    compiled: _CompiledCheck, firings: list[Any], lines: pl.DataFrame, references: Mapping[str, pl.DataFrame]
) -> pl.DataFrame:
    """``_i``, ``claim_id``, ``reason``, ``evidence`` for one check's firings."""
    check = compiled.check
    rows: dict[int, tuple[str, dict[str, Any]]] = {}
    row = lambda i: lines.row(i, named=True)  # noqa: E731
    if isinstance(check, LinePredicateCheck):
        for f in firings:
            rows[f.line] = (f.reason, {c: row(f.line)[c] for c in check.evidence})
    elif isinstance(check, DeadlineCheck):
        for f in firings:
            extras = dict(f.extras)
            deadline = _DAY0 + timedelta(days=extras["deadline"])
            compared = row(f.line)[check.compare]
            evidence = {"regime": extras["regime"], "deadline": deadline, check.compare: compared}
            rows[f.line] = (f.reason, {**evidence, "days_late": (compared - deadline).days})
    elif isinstance(check, ReferencePeriodCheck):
        rows = _periods(compiled, firings, row, references[check.table])
    elif isinstance(check, BurstCheck):
        rows = _bursts(check, firings, row)
    elif isinstance(check, DuplicateKeyCheck):
        # Each later line fired with the one just before it: following those links back, in
        # the order of the groups, gives every line its group's first line, the one kept.
        firsts: dict[int, int] = {}
        for line, before, _ in sorted(firings, key=lambda f: f[2]):
            firsts[line] = firsts.get(before, before)
        group_sizes = Counter(firsts.values())
        for line, first in firsts.items():
            extras = {"kept_claim_id": row(first)["claim_id"], "duplicate_group_size": group_sizes[first] + 1}
            rows[line] = (check.reason, {**{c: row(line)[c] for c in check.evidence}, **extras})
    index = sorted(rows)
    return pl.DataFrame(
        {
            "_i": pl.Series(index, dtype=pl.UInt32),
            "claim_id": lines["claim_id"].gather(index) if index else pl.Series([], dtype=pl.String),
            "reason": [rows[i][0] for i in index],
            "evidence": [_json(rows[i][1]) for i in index],
        },
        schema={"_i": pl.UInt32, "claim_id": pl.String, "reason": pl.String, "evidence": pl.String},
    )


def _periods(
    compiled: _CompiledCheck,
    firings: list[_Firing],
    row: Callable[[int], dict[str, Any]],
    reference: pl.DataFrame,
) -> dict[int, tuple[str, dict[str, Any]]]:
    """Per line, the reference rows it fell in; the earliest one is the evidence.

    With a ``total``, the rows' values are added up (each row once, whichever alternative
    of the condition matched it) and only lines reaching ``at_least`` are kept.
    """
    check = compiled.check
    assert isinstance(check, ReferencePeriodCheck)
    matched: dict[int, dict[int, Any]] = defaultdict(dict)
    for f in firings:
        extras = dict(f.extras)
        matched[f.line][extras["reference"]] = extras["start"]
    at_least = float(compiled.rule.resolve(check.at_least or 0, compiled.legislation))
    rows: dict[int, tuple[str, dict[str, Any]]] = {}
    for line, starts in matched.items():
        first = min(starts, key=lambda r: (starts[r], r))
        joined = {**reference.row(first, named=True), **row(line)}
        evidence = {c: joined[c.removesuffix("_reference")] for c in check.evidence}
        if check.total:
            total = round(sum(reference[check.total][r] for r in starts), 2)
            if total < at_least:
                continue
            evidence |= dict(zip(reference_total_evidence(check), (total, len(starts)), strict=True))
        reason = check.reason or reference[check.reason_column or ""][first]
        rows[line] = (reason, evidence)
    return rows


def _bursts(
    check: BurstCheck, chains: list[Any], row: Callable[[int], dict[str, Any]]
) -> dict[int, tuple[str, dict[str, Any]]]:
    """Chains sharing a line belong to one run: the run is the burst the evidence describes."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order: dict[int, int] = {}
    for chain in chains:
        for line, at in chain:
            order[line] = at
            parent[root(line)] = root(chain[0][0])
    runs: dict[int, list[int]] = defaultdict(list)
    for line in order:
        runs[root(line)].append(line)
    rows: dict[int, tuple[str, dict[str, Any]]] = {}
    for members in runs.values():
        first = min(members, key=order.__getitem__)
        last = max(members, key=order.__getitem__)
        extras = {
            "burst_size": len(members),
            "burst_span_minutes": (order[last] - order[first]) / _MS_PER_MINUTE,
            "burst_first": row(first)[check.order_by],
            "burst_last": row(last)[check.order_by],
        }
        for line in members:
            rows[line] = (check.reason, {**{c: row(line)[c] for c in check.evidence}, **extras})
    return rows


_NOTHING = pl.DataFrame()  # a rule's flagged lines when it never fired


def _evaluate_here(
    shared: References | None,
    frames: Mapping[str, pl.DataFrame],
    legislation: str,
    catalog: Catalog | None,
    lines: pl.DataFrame | None,
    posted: pl.Series | None,
) -> pl.DataFrame:
    """The flags, in a worker; ``catalog`` None is the shipped one (the worker has it already)."""
    catalog = catalog or load_catalog()
    tables = {name: frame.lazy() for name, frame in {**(shared.tables if shared else {}), **frames}.items()}
    enriched = lines if lines is not None else enriched_lines(tables)
    ruleset = _registered(catalog, legislation, enriched, tables)
    references, reference_facts = shared.facts(ruleset, tables) if shared else _reference_facts(ruleset, tables)
    firings = run_session(ruleset, enriched, reference_facts, posted)
    rules = list(catalog)
    flagged = []
    for rule in rules:
        fired = [c for c in ruleset.checks if c.rule.id == rule.id and firings[(rule.id, c.index)]]
        # Most lines are clean: a rule that never fired needs no frame (each costs a collect).
        checks = [_flagged(c, firings[(rule.id, c.index)], enriched, references).lazy() for c in fired]
        found = one_flag_per_line(checks).collect() if checks else _NOTHING
        flagged.append(
            found if posted is None or found.is_empty() else found.filter(pl.col("claim_id").is_in(posted.implode()))
        )
    return flags_table(rules, legislation, flagged, enriched)


def _flags_or_none(*args: Any) -> pl.DataFrame | None:
    """:func:`_evaluate_here`'s flags, or None for none: most real-time checks flag nothing,
    and an empty frame still costs its schema's encoding both ways (a fifth of a millisecond)."""
    flags = _evaluate_here(*args)
    return flags if flags.height else None


def _parts(lines: pl.DataFrame, n: int) -> list[pl.DataFrame]:
    """``lines`` in up to ``n`` parts of whole providers (every rule stays within one provider),
    to be decided in as many workers at once; each part numbered ``_i`` afresh.

    The parts are about equal in lines (each provider in turn, the largest first, goes to the
    smallest part): the call waits for the largest, and parts by a hash of the provider came
    out as uneven as 704 and 416 lines.
    """
    if n < 2 or lines.height < SPLIT_FROM_LINES:
        return [lines]
    sizes = lines.group_by(SESSION_KEY).len().sort("len", SESSION_KEY, descending=[True, False], nulls_last=True)
    loads = [(0, k) for k in range(n)]
    part_of: dict[str, int] = {}
    for provider, size in sizes.iter_rows():
        load, k = heapq.heappop(loads)
        if provider is not None:  # invalid lines, decided with the first part
            part_of[provider] = k
        heapq.heappush(loads, (load + size, k))
    part = pl.col(SESSION_KEY).replace_strict(part_of, default=0, return_dtype=pl.UInt32)
    split = lines.with_columns(part.alias("_part"))
    return [frame.drop("_i").with_row_index("_i") for frame in split.partition_by("_part", include_key=False)]


def _warm_up() -> None:
    """Run in a new worker: unpickling this function imports this module and its libraries."""
    load_catalog()


# durable_rules runs in worker processes of their own (see ``rules.durable_worker``), as many
# as the machine has cores when calls come at once.
_POOL = WorkerPool(os.cpu_count() or 1, initializer=_warm_up)
# From this many lines on, a check's providers are split over the workers.
SPLIT_FROM_LINES = 500


def prepare_workers(references: References, legislations: Iterable[str]) -> None:
    """Start every durable_rules worker now and give each ``references``, with the rulesets of
    ``legislations`` registered and the reference facts derived: a service about to check
    claims, so that no check waits for them."""
    lines = enriched_lines({name: frame.lazy() for name, frame in {**references.tables, **NO_LINES}.items()})
    for legislation in legislations:
        _POOL.each(
            _evaluate_here, NO_LINES, legislation, None, lines, lines["claim_id"], shared=(references.key, references)
        )


def evaluate_durable(
    tables: Mapping[str, pl.LazyFrame | pl.DataFrame],
    *,
    legislation: str = "current",
    catalog: Catalog | None = None,
    lines: pl.DataFrame | None = None,
    effective_from: date | None = None,
    posted: pl.Series | None = None,
    references: References | None = None,
    deadline: float | None = None,
) -> pl.DataFrame:
    """The flags of every rule under ``legislation``, decided by durable_rules; same table as ``evaluate``.

    Runs in a durable_rules worker process. ``posted`` (claim ids) limits the answer to those
    lines' flags, and the facts asserted to the lines that could bear on them (a duplicate
    needs its key group, a burst its partition): what a real-time check asks.
    ``references`` are reference tables sent to each worker once and kept there, beside
    ``tables``. Past ``deadline`` seconds the worker is replaced and the call
    retried once, then :class:`~rules.durable_worker.WorkerUnavailable` is raised.
    """
    frames = {name: frame.collect() if isinstance(frame, pl.LazyFrame) else frame for name, frame in tables.items()}
    if lines is not None and LINE in frames:  # the enriched lines are all the worker reads of them
        frames[LINE] = frames[LINE].clear()
    catalog = catalog or load_catalog()

    def in_worker(version: str, part: pl.DataFrame | None) -> pl.DataFrame:
        shared = (references and references.key, references)
        sent = None if catalog is load_catalog() else catalog  # the shipped one is not sent
        flags = _POOL.run(_flags_or_none, frames, version, sent, part, posted, shared=shared, deadline=deadline)
        return no_flags() if flags is None else flags

    def flags_under(version: str, only: Sequence[str] | None) -> pl.DataFrame:
        parts = _parts(lines, _POOL.size) if lines is not None else [None]
        if len(parts) == 1:
            flags = in_worker(version, parts[0])
        else:
            with ThreadPoolExecutor(len(parts)) as threads:
                flags = pl.concat(threads.map(lambda part: in_worker(version, part), parts)).sort("rule_id", "claim_id")
        return flags if only is None else flags.filter(pl.col("rule_id").is_in(only))

    return follow_timeline(flags_under, catalog, legislation, catalog.effective_from(legislation, effective_from))

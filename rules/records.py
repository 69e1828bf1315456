"""The enriched line of ``rules/context.py`` computed line by line, from in-memory indexes.

A real-time check enriches one provider's recent lines and the claims just posted: a few
hundred rows at most, where each of the Polars enrichment's two dozen queries costs its
fixed time whatever the rows (18 ms in all for one claim). Here the run's reference tables
are indexed once (:class:`ReferenceIndex`) and each line is a few dictionary look-ups. Same
columns, same types, same values: ``tests/rules/test_records.py`` compares both on whole
generated datasets. Null logic follows Polars' (Kleene: ``null | true`` is true).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from functools import cache
from operator import itemgetter

import polars as pl

from data_contracts import TABLES
from data_contracts.records import Row
from data_contracts.schemas import THIRD_PARTY_CHANNELS
from rules.catalog import BurstCheck, Catalog, DuplicateKeyCheck
from rules.context import DAY_US, MINUTE_US, NO_LINES, enrich
from rules.periods import OPEN_END

_EPOCH = datetime(1970, 1, 1)


def _within(day: date, start: date, end: date | None) -> bool:
    """``periods.within`` for one date."""
    return start <= day <= (end or OPEN_END)


@cache
def _public_holidays(year: int) -> frozenset[date]:
    import holidays  # 0.15 s with Belgium's calendar: only when lines are enriched

    return frozenset(holidays.country_holidays("BE", years=year))


def _micros(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _in_window(at: time | None, start: time | None, end: time | None) -> bool | None:
    """``context.in_window`` with Polars' nulls: a wrapping window is ``at >= start | at < end``."""
    if at is None or start is None or end is None:
        if at is None or (start is None and end is None):
            return None
        # The condition start <= end is null, so the wrapping branch decides: one known side.
        side = at >= start if start is not None else at < end  # type: ignore[operator]
        return True if side else None
    if start <= end:
        return start <= at < end
    return at >= start or at < end


def _recorded_at(day: date, served: time | None, encoded: datetime | None) -> datetime | None:
    """``context.time_of_record``: the service time unless it is the typing time's stamp."""
    served_us = None if served is None else _micros(served)
    typed_us = None if encoded is None else (_micros_since_epoch(encoded) % DAY_US)
    stamped = None if served_us is None or typed_us is None else served_us // MINUTE_US == typed_us // MINUTE_US
    clock = served_us if stamped is False else (typed_us if typed_us is not None else served_us)
    return None if clock is None else datetime.combine(day, time()) + timedelta(microseconds=clock)


def _micros_since_epoch(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class ReferenceIndex:
    """A run's reference tables as dictionaries, built once per run for real-time checks."""

    def __init__(self, tables: Mapping[str, pl.DataFrame]) -> None:
        self.providers = {
            r["provider_nihdi"]: (r["profession"], r["region"], r["provider_nihdi"][8:11])
            for r in tables["providers"].iter_rows(named=True)
        }
        # Each code's versions by valid_from (the contract makes (code, valid_from) unique).
        versions: dict[str, list[Row]] = defaultdict(list)
        for row in tables["nomenclature"].sort("valid_from").iter_rows(named=True):
            versions[row["code"]].append(row)
        self.versions = dict(versions)
        self.starts = {code: [v["valid_from"] for v in found] for code, found in self.versions.items()}
        registry: dict[str, list[Row]] = defaultdict(list)
        for row in tables["third_party_registry"].iter_rows(named=True):
            registry[row["third_party_number"]].append(row)
        self.registry = dict(registry)
        self.periods = {
            number: ", ".join(sorted({f"{r['valid_from']}..{r['valid_to'] or 'open'}" for r in rows}))
            for number, rows in self.registry.items()
        }
        self.schema = _enriched_schema(tables)

    def in_force(self, code: str, day: date) -> Row | None:
        """The version of ``code`` in force on ``day``, the latest started when several are."""
        versions = self.versions.get(code, [])
        for version in reversed(versions[: bisect_right(self.starts.get(code, []), day)]):
            if _within(day, version["valid_from"], version["valid_to"]):
                return version
        return None

    def code(self, code: str, day: date) -> Row:
        version = self.in_force(code, day)
        latest = self.versions[code][-1] if code in self.versions else None
        day_version = (
            self.in_force(version["day_equivalent_code"], day) if version and version["day_equivalent_code"] else None
        )
        known = version or {}
        return {
            "time_window": known.get("time_window"),
            "window_start": known.get("window_start"),
            "window_end": known.get("window_end"),
            "code_fee_eur": known.get("fee_eur"),
            "day_equivalent_code": known.get("day_equivalent_code"),
            "code_profession": (version or latest or {}).get("profession"),
            "code_setting": (version or latest or {}).get("setting"),
            "code_in_force": version is not None,
            "day_equivalent_fee_eur": day_version["fee_eur"] if day_version else None,
        }

    def third_party(self, number: str | None, provider: str, day: date) -> Row:
        """``tp_status`` and what the registry says of a third-party use of ``number``."""
        if number is None:
            return {"tp_status": "missing", "tp_registry_periods": None, "tp_authorized_on_date": None}
        rows = self.registry.get(number, [])
        on_date = [r for r in rows if _within(day, r["valid_from"], r["valid_to"])]
        if any(r["authorized_nihdi"] == provider and r["authorized_nihdi"] in self.providers for r in on_date):
            return {"tp_status": "ok", "tp_registry_periods": None, "tp_authorized_on_date": None}
        authorized = ", ".join(sorted({r["authorized_nihdi"] for r in on_date})) or None
        status = "unregistered" if not rows else ("not_valid_on_date" if authorized is None else "not_authorized")
        return {
            "tp_status": status,
            "tp_registry_periods": self.periods.get(number),
            "tp_authorized_on_date": authorized,
        }

    def enrich(self, lines: Iterable[Row], invoices: Mapping[str, tuple[str | None, date]]) -> pl.DataFrame:
        """The enriched lines (``enriched_lines`` without ``_i``); ``invoices`` gives each
        named invoice's third-party number and submission date."""
        rows = []
        for line in lines:
            number, invoice_submitted = invoices.get(line["invoice_id"] or "", (None, None))
            profession, region, qualification = self.providers[line["provider_nihdi"]]
            third_party = line["channel"] in THIRD_PARTY_CHANNELS
            day = line["service_date"]
            code = self.code(line["nomenclature_code"], day)
            registry = (
                self.third_party(number, line["provider_nihdi"], day)
                if third_party
                else dict.fromkeys(("tp_status", "tp_registry_periods", "tp_authorized_on_date"))
            )
            rows.append(
                {
                    **line,
                    "third_party_number": number,
                    "effective_submitted_date": line["submitted_date"] or invoice_submitted,
                    "is_third_party": third_party,
                    "profession": profession,
                    "region": region,
                    "qualification": qualification,
                    **code,
                    "service_in_window": _in_window(line["service_time"], code["window_start"], code["window_end"]),
                    "weekend_or_holiday": day.isoweekday() >= 6 or day in _public_holidays(day.year),
                    "recorded_at": _recorded_at(day, line["service_time"], line["encoded_at"]),
                    **registry,
                }
            )
        return pl.DataFrame(rows, schema=self.schema)


def _enriched_schema(tables: Mapping[str, pl.DataFrame]) -> pl.Schema:
    """The enriched line's columns and types, as the Polars enrichment gives them."""
    return enrich({name: frame.lazy() for name, frame in {**tables, **NO_LINES}.items()}).schema


def bearing_on(catalog: Catalog, lines: list[Row], posted: set[str]) -> list[Row]:
    """The ``lines`` that can bear on the ``posted`` claims' flags: those claims, and the lines
    sharing a duplicate key or a burst partition with one of them (every other shape reads
    one line). ``DurableRuleset.relevant`` picks the same per ruleset in the rules worker;
    choosing before enrichment spares enriching, sending and preparing the others. All
    ``lines`` when a key reads a column the enrichment adds.
    """
    groups = _raw_line_groups(catalog)
    if groups is None:
        return lines
    mine = [line for line in lines if line["claim_id"] in posted]
    # Columns every group shares (a provider and a day) first: one look-up per line leaves
    # the few lines near a posted one, whose groups are then compared.
    common = [column for column in groups[0] if all(column in group for group in groups[1:])] if groups else []
    if common:
        near = itemgetter(*common)
        close = {near(line) for line in mine}
        lines = [line for line in lines if near(line) in close]
    keys = [itemgetter(*group) for group in groups]  # a tuple per line, or one value for one column
    shared = [{key(line) for line in mine} for key in keys]
    return [
        line
        for line in lines
        if line["claim_id"] in posted or any(key(line) in values for key, values in zip(keys, shared, strict=True))
    ]


def bearing_same_day(catalog: Catalog) -> bool:
    """Whether every line that can bear on a posted claim (:func:`bearing_on`) is of the same
    provider and served on the same day: then no other recent line need be read."""
    groups = _raw_line_groups(catalog)
    return groups is not None and all({"provider_nihdi", "service_date"} <= set(group) for group in groups)


def _raw_line_groups(catalog: Catalog) -> tuple[tuple[str, ...], ...] | None:
    """:func:`_line_groups`, or None when one reads a column the enrichment adds."""
    groups = _line_groups(catalog)
    if any(column not in TABLES["billing_lines"].dtypes for group in groups for column in group):
        return None
    return groups


def _line_groups(catalog: Catalog) -> tuple[tuple[str, ...], ...]:
    """The column groups whose lines a rule reads together: duplicate keys, burst partitions."""
    groups: dict[tuple[str, ...], None] = {}
    for rule in catalog:
        for check in rule.checks:
            if isinstance(check, DuplicateKeyCheck):
                groups[tuple(check.key)] = None
            elif isinstance(check, BurstCheck):
                groups[tuple(check.partition_by)] = None
    return tuple(groups)

"""Posted records validated one by one in plain Python: the contract's checks without Polars.

A real-time check posts a claim or a few; every Polars query costs milliseconds of planning
however few its rows (the loader's for one line took 20 ms). This path gives the loader's
verdict, the same reason codes in the same order, for records whose every value is written
the usual way: ``YYYY-MM-DD`` or ``DD/MM/YYYY`` dates in the plausible years, ``HH:MM[:SS]``
times, ISO date-times to the second, plain decimals and integers, the loader's boolean words,
and text that decoded cleanly. A record with any other value is left to the loader
(:func:`validate_records` answers ``None``), whose parsers know every form and say which values
are malformed. Column checks are read from the dataframely schema (nullability, pattern,
minimum, allowed values); the checks across columns and tables have their twins here, tested
equal to the loader on the contract's bad-row cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache
from typing import Any

from data_contracts.parsers import DATE_YEARS, FALSE_WORDS, TRUE_WORDS, WHITESPACE, is_national_number
from data_contracts.references import CHECKS
from data_contracts.schemas import PROVENANCE_COLUMNS, THIRD_PARTY_CHANNELS
from data_contracts.tables import TableSpec

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)")
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DAY_FIRST = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4})")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
_DATETIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")


def trimmed(text: str) -> str:
    """``text`` without the leading and trailing white space the loader's parsers remove."""
    return text.strip(WHITESPACE)


class Unusual(ValueError):
    """A value written in a form this path leaves to the loader."""


def _dated(value: date) -> date:
    if not DATE_YEARS[0] <= value.year <= DATE_YEARS[1]:
        raise Unusual(value)
    return value


def _numbers(pattern: re.Pattern[str], text: str) -> list[int]:
    found = pattern.fullmatch(text)
    if found is None:
        raise Unusual(text)
    return [int(part) for part in found.groups(default="0")]


def _date(text: str) -> date:
    if _ISO_DATE.fullmatch(text):
        year, month, day = _numbers(_ISO_DATE, text)
    else:
        day, month, year = _numbers(_DAY_FIRST, text)
    return _dated(date(year, month, day))


def _time(text: str) -> time:
    hour, minute, second = _numbers(_TIME, text)
    return time(hour, minute, second)


def _datetime(text: str) -> datetime:
    year, month, day, hour, minute, second = _numbers(_DATETIME, text)
    value = datetime(year, month, day, hour, minute, second)
    _dated(value)
    return value


def _matched(pattern: re.Pattern[str], convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if pattern.fullmatch(text) is None:
            raise Unusual(text)
        return convert(text)

    return parse


def _boolean(text: str) -> bool:
    word = text.lower() if text.isascii() else ""
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise Unusual(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "Date": _date,
    "Time": _time,
    "Datetime": _datetime,
    "Float64": _matched(_DECIMAL, float),
    "Int64": _matched(_INTEGER, int),
    "Boolean": _boolean,
    "String": str,
}


def _parsed(raw: str | None, parse: Callable[[str], Any]) -> Any:
    """The typed value of a posted text, None when blank; :class:`Unusual` for the loader."""
    if raw is None:
        return None
    if "\ufffd" in raw:  # not valid UTF-8 where it came from: the loader says so
        raise Unusual(raw)
    text = trimmed(raw)
    if not text:
        return None
    try:
        return parse(text)
    except ValueError as exc:  # a 30 February, a 25:61
        raise Unusual(text) from exc


# ---------------------------------------------------------------------------------------
# Checks: each answers True when a row fails it. Rows are dicts of typed values.

Row = dict[str, Any]  # a record with the contract's columns, typed
RowCheck = Callable[[Row], bool]
Quarantined = list[tuple[int, list[str]]]  # reasons by row number (from 1)


def _third_party(row: Row) -> bool | None:
    """The channel is a third-party one; None without a channel (the loader's null: no verdict)."""
    return None if row["channel"] is None else row["channel"] in THIRD_PARTY_CHANNELS


# The schemas' checks across columns (``@dy.rule`` methods), by reason code, except the
# duplicate key, which looks at the rows before.
ROW_CHECKS: dict[str, RowCheck] = {
    "patient_id_not_pseudonymised": lambda r: r["patient_id"] is not None and is_national_number(r["patient_id"]),
    "reimbursed_exceeds_fee": lambda r: (
        r["amount_reimbursed"] is not None and r["amount_fee"] is not None and r["amount_reimbursed"] > r["amount_fee"]
    ),
    "missing_invoice_id": lambda r: _third_party(r) is True and r["invoice_id"] is None,
    "invoice_id_not_allowed": lambda r: _third_party(r) is False and r["invoice_id"] is not None,
    "missing_submitted_date": lambda r: _third_party(r) is False and r["submitted_date"] is None,
}


def _column_check(spec: TableSpec, name: str) -> tuple[str, RowCheck] | None:
    """The reason code and test of one of the schema's column rules (``column|check``)."""
    column_name, check = name.split("|")
    column: Any = spec.schema.columns()[column_name]  # the attributes of its kind: min, max, check
    if column_name in PROVENANCE_COLUMNS or check in ("inf", "nan"):
        return None  # provenance is the loader's; a plain decimal is never infinite nor NaN
    if check == "nullability":
        return f"missing_{column_name}", lambda r: r[column_name] is None
    tests: dict[str, Callable[[Any], bool]] = {
        "check__digits": lambda v: not column.check["digits"].accepts(v),
        "min": lambda v: v < column.min,
        "max": lambda v: v > column.max,
        "check__allowed": lambda v: v not in column.check["allowed"].values,
    }
    if check not in tests:
        raise NotImplementedError(f"{spec.name}: no twin for the schema's rule {name!r}")
    test = tests[check]
    return f"invalid_{column_name}", lambda r: r[column_name] is not None and test(r[column_name])


@cache
def _parsers(spec: TableSpec) -> dict[str, Callable[[str], Any]]:
    """The parser of each column's type (read from the schema once: that takes milliseconds)."""
    return {name: _PARSERS[dtype.base_type().__name__] for name, dtype in spec.dtypes.items()}


@cache
def _checks(spec: TableSpec) -> list[tuple[str, RowCheck | None]]:
    """The schema's rules in the loader's order, each as (reason code, test); None for the
    duplicate key."""
    checks: list[tuple[str, RowCheck | None]] = []
    for name in spec.schema._validation_rules(with_cast=False):
        if name == "well_formed":
            continue
        if name == "duplicate_key":
            checks.append((name, None))
        elif "|" in name:
            found = _column_check(spec, name)
            if found is not None:
                checks.append(found)
        elif name in ROW_CHECKS:
            checks.append((name, ROW_CHECKS[name]))
        else:
            raise NotImplementedError(f"{spec.name}: no twin for the schema's rule {name!r}")
    return checks


@dataclass(frozen=True)
class Known:
    """What a billing line refers to: providers, codes, and the invoices' submission dates."""

    providers: frozenset[str]
    codes: frozenset[str]
    invoices: Mapping[str, date]


def _reference_reasons(row: Row, known: Known) -> list[str]:
    """The codes of :data:`data_contracts.references.CHECKS` that ``row`` fails, in that order."""
    invoice = row["invoice_id"]
    effective = row["submitted_date"] if row["submitted_date"] is not None else known.invoices.get(invoice or "")
    failed = {
        "unknown_provider": row["provider_nihdi"] not in known.providers,
        "unknown_invoice": invoice is not None and invoice not in known.invoices,
        "unknown_nomenclature_code": row["nomenclature_code"] not in known.codes,
        "service_after_submission": effective is not None and row["service_date"] > effective,
    }
    return [code for code in CHECKS if failed[code]]


@dataclass(frozen=True)
class Verdict:
    """Valid rows (typed, defaults filled) and the others' reasons by row number (from 1)."""

    valid: list[Row]
    quarantined: Quarantined


def validate_records(spec: TableSpec, records: Iterable[Mapping[str, Any]], known: Known | None) -> Verdict | None:
    """The loader's verdict on ``records`` (values as text), or None when a value is unusual.

    ``known`` is needed for billing lines (their references), and ignored otherwise.
    """
    dtypes = _parsers(spec)
    # A batch repeats its dates, codes and providers: each distinct text is parsed once per column.
    texts: dict[str, dict[str | None, Any]] = {name: {} for name in dtypes}

    def typed(name: str, raw: str | None) -> Any:
        column = texts[name]
        if raw not in column:
            column[raw] = _parsed(raw, dtypes[name])
        return column[raw]

    try:
        rows = [{name: typed(name, record.get(name)) for name in dtypes} for record in records]
    except Unusual:
        return None
    checks = _checks(spec)
    if spec.name == "billing_lines" and known is None:
        raise ValueError("billing lines are checked against what they refer to: give `known`")
    key: tuple[str, ...] = getattr(spec.schema, "key", ())
    seen: set[tuple[Any, ...]] = set()
    failed: Quarantined = []
    passed: list[tuple[int, Row]] = []
    for number, row in enumerate(rows, start=1):
        value = tuple(row[c] for c in key)
        keyed = bool(key) and None not in value  # a row missing part of its key is not a duplicate
        reasons = [
            code
            for code, test in checks
            if (test(row) if test is not None else keyed and value in seen)  # the first row keeps its key
        ]
        if keyed:
            seen.add(value)
        if reasons:
            failed.append((number, reasons))
        else:
            passed.append((number, row))
    valid = []
    for number, row in passed:
        reasons = _reference_reasons(row, known) if known is not None and spec.name == "billing_lines" else []
        if reasons:
            failed.append((number, reasons))
        else:
            valid.append({**row, **{c: v for c, v in spec.defaults.items() if row[c] is None}})
    return Verdict(valid, failed)

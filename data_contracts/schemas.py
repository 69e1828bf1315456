"""One dataframely schema per input table: DATA_CONTRACT §1 in code.

Column checks live on the columns; checks across columns of one row, and the duplicate
key, are ``@dy.rule`` methods whose name is the quarantine reason code. Checks that need
another table (references, the invoice's submission date) are in ``references.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import dataframely as dy
import polars as pl

from data_contracts.keys import first_reads
from data_contracts.parsers import exact_digits, has_exact_digits, looks_like_national_number

CHANNELS = ("paper_cash", "eattest", "paper_third_party", "efact")
THIRD_PARTY_CHANNELS = ("paper_third_party", "efact")
PLACES = ("office", "home", "hospital", "other")
PROFESSIONS = ("gp", "specialist", "nurse", "physiotherapist", "dentist", "midwife", "other")
REGIONS = ("BRU", "VLA", "WAL")
SETTINGS = ("office", "home", "hospital", "any")
TIME_WINDOWS = ("any", "day", "evening", "night", "weekend")
PROVIDER_STATUSES = ("suspended", "visa_withdrawn")
SEXES = ("F", "M", "X")

PROVENANCE_COLUMNS = ("_source", "_row", "_malformed")


@dataclass(frozen=True)
class OneOf:
    """A column check: the value is one of ``values`` (kept, for checks of single records)."""

    values: tuple[str, ...]

    def __call__(self, col: pl.Expr) -> pl.Expr:
        return col.is_in(self.values)


def _one_of(values: tuple[str, ...]) -> dict[str, Callable[[pl.Expr], pl.Expr]]:
    return {"allowed": OneOf(values)}


@dataclass(frozen=True)
class Digits:
    """A column check: exactly ``count`` ASCII digits (:func:`exact_digits`; ``accepts`` is the
    same test of one value, for checks of single records)."""

    count: int

    def __call__(self, col: pl.Expr) -> pl.Expr:
        return col.is_null() | exact_digits(col, self.count)  # a missing value is nullability's

    def accepts(self, value: str) -> bool:
        return has_exact_digits(value, self.count)


def _digits(count: int, *, nullable: bool = False) -> dy.String:
    return dy.String(nullable=nullable, check={"digits": Digits(count)})


def _first_of_key(*columns: str, repeated: pl.Series | None = None) -> pl.Expr:
    """True for the first row read with this key (rows are in read order); ``repeated``, see
    :func:`data_contracts.keys.first_reads`."""
    key = pl.struct(columns) if len(columns) > 1 else pl.col(columns[0])
    return pl.any_horizontal(pl.col(c).is_null() for c in columns) | first_reads(key, repeated)


class Provenance(dy.Schema):
    """Where a row came from, and which of its values did not parse."""

    source = dy.String(alias="_source")
    row = dy.Int64(alias="_row")
    # The names of the columns whose values did not parse, written by the loader: never null,
    # so not checked for nulls value by value (12 ms of a schema check of 2.5 million lines).
    malformed = dy.List(dy.String(nullable=True), alias="_malformed")

    @dy.rule()
    def well_formed(cls) -> pl.Expr:
        return pl.col("_malformed").list.len() == 0


def _nihdi(*, nullable: bool = False) -> dy.String:
    return _digits(11, nullable=nullable)


class BillingLines(Provenance):
    key: ClassVar[tuple[str, ...]] = ("claim_id",)  # a later row with the same key is a duplicate
    claim_id = dy.String()
    invoice_id = dy.String(nullable=True)
    provider_nihdi = _nihdi()
    patient_id = dy.String()
    insurer_code = _digits(3)
    nomenclature_code = _digits(6)
    service_date = dy.Date()
    service_time = dy.Time(nullable=True)
    encoded_at = dy.Datetime(nullable=True, time_unit="us")
    channel = dy.String(check=_one_of(CHANNELS))
    submitted_date = dy.Date(nullable=True)
    amount_fee = dy.Float64(min=0)
    amount_reimbursed = dy.Float64(min=0)
    place_of_service = dy.String(nullable=True, check=_one_of(PLACES))
    institution_nihdi = _nihdi(nullable=True)
    quantity = dy.Int64(nullable=True, min=1)
    software_id = dy.String(nullable=True)

    @dy.rule()
    def duplicate_key(cls) -> pl.Expr:
        return _first_of_key(*cls.key)

    @dy.rule()
    def patient_id_not_pseudonymised(cls) -> pl.Expr:
        return ~looks_like_national_number(pl.col("patient_id"))

    @dy.rule()
    def reimbursed_exceeds_fee(cls) -> pl.Expr:
        return pl.col("amount_reimbursed") <= pl.col("amount_fee")

    @dy.rule()
    def missing_invoice_id(cls) -> pl.Expr:
        return ~pl.col("channel").is_in(THIRD_PARTY_CHANNELS) | pl.col("invoice_id").is_not_null()

    @dy.rule()
    def invoice_id_not_allowed(cls) -> pl.Expr:
        return pl.col("channel").is_in(THIRD_PARTY_CHANNELS) | pl.col("invoice_id").is_null()

    @dy.rule()
    def missing_submitted_date(cls) -> pl.Expr:
        return pl.col("channel").is_in(THIRD_PARTY_CHANNELS) | pl.col("submitted_date").is_not_null()


def billing_lines_repeating_only(hashes: pl.Series) -> type[BillingLines]:
    """:class:`BillingLines` for rows whose claim id can repeat only where its hash is among
    ``hashes``: the hashes read more than once in the whole table, found beforehand (a run in
    partitions does, ``data_contracts.partitions``). The duplicate check then compares those
    few rows' claim ids, rather than sorting every row's hash again: a quarter of the schema
    check of a partition. Same rule, same reason code."""

    class KnownRepeats(BillingLines):
        @dy.rule()
        def duplicate_key(cls) -> pl.Expr:
            return _first_of_key(*cls.key, repeated=hashes)

    return KnownRepeats


class ThirdPartyInvoices(Provenance):
    key: ClassVar[tuple[str, ...]] = ("invoice_id",)  # a later row with the same key is a duplicate
    invoice_id = dy.String()
    third_party_number = dy.String(nullable=True)
    insurer_code = _digits(3)
    submitted_date = dy.Date()
    amount_claimed = dy.Float64(min=0)
    line_count = dy.Int64(min=0)

    @dy.rule()
    def duplicate_key(cls) -> pl.Expr:
        return _first_of_key(*cls.key)


class ThirdPartyRegistry(Provenance):
    third_party_number = dy.String()
    authorized_nihdi = _nihdi()
    holder_name = dy.String(nullable=True)
    valid_from = dy.Date()
    valid_to = dy.Date(nullable=True)

    @dy.rule()
    def period_ends_before_start(cls) -> pl.Expr:
        return pl.col("valid_to") >= pl.col("valid_from")


class Providers(Provenance):
    key: ClassVar[tuple[str, ...]] = ("provider_nihdi",)  # a later row with the same key is a duplicate
    provider_nihdi = _nihdi()
    profession = dy.String(check=_one_of(PROFESSIONS))
    region = dy.String(nullable=True, check=_one_of(REGIONS))
    postcode = _digits(4, nullable=True)

    @dy.rule()
    def duplicate_key(cls) -> pl.Expr:
        return _first_of_key(*cls.key)


class TpSuspensions(Provenance):
    provider_nihdi = _nihdi()
    start_date = dy.Date()
    end_date = dy.Date(nullable=True)
    decision_ref = dy.String(nullable=True)

    @dy.rule()
    def period_ends_before_start(cls) -> pl.Expr:
        return pl.col("end_date") >= pl.col("start_date")


class ProviderDebts(Provenance):
    provider_nihdi = _nihdi()
    debt_from = dy.Date()
    debt_to = dy.Date(nullable=True)
    amount_eur = dy.Float64(min=0)
    plan_from = dy.Date(nullable=True)
    plan_respected = dy.Bool(nullable=True)

    @dy.rule()
    def period_ends_before_start(cls) -> pl.Expr:
        return pl.col("debt_to") > pl.col("debt_from")


class ProviderStatus(Provenance):
    """Periods in which a provider may not bill (right to practise suspended, visa withdrawn)."""

    provider_nihdi = _nihdi()
    status = dy.String(check=_one_of(PROVIDER_STATUSES))
    from_date = dy.Date()
    to_date = dy.Date(nullable=True)
    decision_ref = dy.String(nullable=True)

    @dy.rule()
    def period_ends_before_start(cls) -> pl.Expr:
        return pl.col("to_date") >= pl.col("from_date")


class Patients(Provenance):
    """Pseudonymised patient attributes, for peers with a comparable patient population."""

    key: ClassVar[tuple[str, ...]] = ("patient_id",)  # a later row with the same key is a duplicate
    patient_id = dy.String()
    birth_year = dy.Int64(nullable=True, min=1880, max=2100)
    sex = dy.String(nullable=True, check=_one_of(SEXES))
    preferential_reimbursement = dy.Bool(nullable=True)
    chronic_condition = dy.Bool(nullable=True)

    @dy.rule()
    def duplicate_key(cls) -> pl.Expr:
        return _first_of_key(*cls.key)

    @dy.rule()
    def patient_id_not_pseudonymised(cls) -> pl.Expr:
        return ~looks_like_national_number(pl.col("patient_id"))


class Nomenclature(Provenance):
    key: ClassVar[tuple[str, ...]] = ("code", "valid_from")  # a later row with the same key is a duplicate
    code = _digits(6)
    label_fr = dy.String(nullable=True)
    label_nl = dy.String(nullable=True)
    profession = dy.String(check=_one_of(PROFESSIONS))
    setting = dy.String(check=_one_of(SETTINGS))
    time_window = dy.String(check=_one_of(TIME_WINDOWS))
    window_start = dy.Time(nullable=True)
    window_end = dy.Time(nullable=True)
    fee_eur = dy.Float64(min=0)
    day_equivalent_code = _digits(6, nullable=True)
    valid_from = dy.Date()
    valid_to = dy.Date(nullable=True)

    @dy.rule()
    def duplicate_key(cls) -> pl.Expr:
        return _first_of_key(*cls.key)

    @dy.rule()
    def missing_window(cls) -> pl.Expr:
        timed = pl.col("time_window").is_in(("evening", "night"))
        return ~timed | (pl.col("window_start").is_not_null() & pl.col("window_end").is_not_null())

    @dy.rule()
    def period_ends_before_start(cls) -> pl.Expr:
        return pl.col("valid_to") >= pl.col("valid_from")

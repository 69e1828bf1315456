"""The enriched billing line every rule reads: the line, its invoice, its provider, its
code's attributes on the date of service, and what the registry says of its number.

Columns added to the contract's ``billing_lines``:
``third_party_number``, ``effective_submitted_date``, ``is_third_party``, ``profession``,
``region``, ``qualification``, ``time_window``, ``window_start``, ``window_end``,
``code_fee_eur``, ``day_equivalent_code``, ``day_equivalent_fee_eur`` (from the code's version
in force on the date of service), ``code_profession`` and ``code_setting`` (that version's, or
the code's latest when none is in force), ``code_in_force``, ``service_in_window`` (the
service time lies in the code's window, which wraps past midnight when it ends before it
starts; null without a time or a window), ``weekend_or_holiday`` (Saturday, Sunday or a
Belgian legal public holiday), ``recorded_at`` (the date of service at the line's time of
record: its service time, unless that is only the typing time stamped by the software, see
:func:`time_of_record`), ``tp_status`` (``missing``, ``unregistered``,
``not_valid_on_date``, ``not_authorized``, ``ok``; null off third-party),
``tp_registry_periods``, ``tp_authorized_on_date``.

Ten million lines are never copied: each lookup joins one key column against a small
table and the answers are put beside the lines. Keys with several parts are packed into
one integer first, because hashing one integer is many times cheaper than hashing strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import polars as pl

from data_contracts import TABLES
from data_contracts.days import days_between
from data_contracts.keys import joined, looked_up
from data_contracts.references import INVOICE_ROW
from data_contracts.schemas import THIRD_PARTY_CHANNELS
from rules.periods import within

# The line inputs of :func:`enrich`, empty: with a run's reference tables, they give the
# enriched line's columns, and they are what a call sends that brings its lines enriched.
NO_LINES = {name: TABLES[name].empty() for name in ("billing_lines", "third_party_invoices")}


def _lookup(keys: pl.Series, table: pl.DataFrame, *, millions: bool = False) -> pl.DataFrame:
    """``table``'s other columns for each key, in the keys' order (null where absent).

    ``table``'s first column is the key and holds each value once. Its other text columns
    come back categorical: a category is 4 bytes a line where a string is 16, and ten
    million lines times a dozen such columns is most of what enrichment writes. A table of
    ``millions`` of rows (the invoices) is joined by its keys' hashes (:func:`looked_up`).
    """
    table = _categorical(table)
    return looked_up(keys, table) if millions else joined(keys, table)


def _categorical(table: pl.DataFrame) -> pl.DataFrame:
    """``table`` with its text columns but the first (its key) categorical, as lookups give them."""
    return table.with_columns(pl.col(pl.String).exclude(table.columns[0]).cast(pl.Categorical))


def _rows(table: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """What :func:`_lookup` gives for keys whose ``rows`` in ``table`` are already known (null:
    absent): the rows are read, not looked up."""
    return _categorical(table).select(pl.exclude(table.columns[0]).gather(rows))


def _sparse_lookup(keys: pl.Series, table: pl.DataFrame) -> pl.DataFrame:
    """:func:`_lookup` for a ``table`` that few keys find: only their rows are joined."""
    rows = keys.is_in(table[:, 0].implode()).arg_true()
    found = _lookup(keys.gather(rows), table)
    return pl.DataFrame(
        pl.repeat(None, len(keys), dtype=column.dtype, eager=True).alias(column.name).scatter(rows, column)
        for column in found.iter_columns()
    )


def code_attributes(nomenclature: pl.LazyFrame, pairs: pl.LazyFrame) -> pl.LazyFrame:
    """Attributes of ``(nomenclature_code, service_date)`` pairs from the version in force.

    When several versions are in force the latest ``valid_from`` wins; a pair with no version
    in force keeps null attributes, except the profession and setting, which every version of
    a code states (taken from its latest) so that conformity can still be judged. Other
    columns of ``pairs`` are kept.
    """
    versions = nomenclature.select(
        pl.col("code").alias("nomenclature_code"),
        "time_window",
        "window_start",
        "window_end",
        pl.col("fee_eur").alias("code_fee_eur"),
        "day_equivalent_code",
        pl.col("profession").alias("code_profession"),
        pl.col("setting").alias("code_setting"),
        "valid_from",
        "valid_to",
    )
    in_force = (
        pairs.select("nomenclature_code", "service_date")
        .join(versions, on="nomenclature_code", how="inner")
        .filter(within("service_date", "valid_from", "valid_to"))
        .sort("valid_from")
        .unique(["nomenclature_code", "service_date"], keep="last")
        .drop("valid_from", "valid_to")
        .with_columns(pl.lit(True).alias("code_in_force"))
    )
    latest = (
        versions.sort("valid_from")
        .unique("nomenclature_code", keep="last")
        .select(
            "nomenclature_code",
            pl.col("code_profession").alias("_profession"),
            pl.col("code_setting").alias("_setting"),
        )
    )
    day_fees = (
        in_force.select("day_equivalent_code", "service_date")
        .drop_nulls()
        .unique()
        .join(
            nomenclature.select(
                pl.col("code").alias("day_equivalent_code"),
                pl.col("fee_eur").alias("day_equivalent_fee_eur"),
                "valid_from",
                "valid_to",
            ),
            on="day_equivalent_code",
        )
        .filter(within("service_date", "valid_from", "valid_to"))
        .sort("valid_from")
        .unique(["day_equivalent_code", "service_date"], keep="last")
        .drop("valid_from", "valid_to")
    )
    return (
        pairs.join(in_force, on=["nomenclature_code", "service_date"], how="left")
        .join(day_fees, on=["day_equivalent_code", "service_date"], how="left")
        .join(latest, on="nomenclature_code", how="left")
        .with_columns(
            pl.coalesce("code_profession", "_profession").alias("code_profession"),
            pl.coalesce("code_setting", "_setting").alias("code_setting"),
            pl.col("code_in_force").fill_null(False),
        )
        .drop("_profession", "_setting")
    )


def in_window(time: pl.Expr, start: pl.Expr, end: pl.Expr) -> pl.Expr:
    """``start <= time < end``, or outside ``[end, start)`` when the window wraps past midnight."""
    return pl.when(start <= end).then((time >= start) & (time < end)).otherwise((time >= start) | (time < end))


MINUTE_US, DAY_US = 60_000_000, 86_400_000_000


def times_of_day(service_time: pl.Expr, encoded_at: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Microseconds since midnight of the service time and of the typing time."""
    return service_time.cast(pl.Int64) // 1000, encoded_at.cast(pl.Int64) % DAY_US


def _same_minute(served: pl.Expr, typed: pl.Expr) -> pl.Expr:
    return served // MINUTE_US == typed // MINUTE_US


def stamped(service_time: pl.Expr, encoded_at: pl.Expr) -> pl.Expr:
    """The service time is the typing time, to the minute: the software's stamp, not the visit's."""
    return _same_minute(*times_of_day(service_time, encoded_at))


# A package's share of evening-coded lines bearing the stamp, from its counts (null without any).
STAMPED_SHARE = (
    (pl.col("evening_stamped_lines") / pl.col("evening_lines")).fill_nan(None).round(4).alias("stamped_share")
)


def time_of_record(service_date: pl.Expr, served: pl.Expr, typed: pl.Expr) -> pl.Expr:
    """The moment a line says its service took place, on its date of service, from the times
    of day of its service and of its typing (:func:`times_of_day`).

    Practice software stamps a line with the moment it is typed when no time is entered, so a
    service time equal to the typing time (see :func:`stamped`) says nothing of the visit
    itself: then, as without a service time, the typing time is the time of record. Computed
    on microsecond counts: ten million lines, and each temporal cast would copy them. The times
    of day are best columns: an expression written in both branches of a condition is
    computed in both.
    """
    clock = pl.when(_same_minute(served, typed).not_()).then(served).otherwise(pl.coalesce(typed, served))
    return (service_date.cast(pl.Int64) * DAY_US + clock).cast(pl.Datetime("us"))


def weekend_or_holiday(day: pl.Expr, first: date | None, last: date | None) -> pl.Expr:
    """Saturday, Sunday or a Belgian legal public holiday, for dates from ``first`` to ``last``."""
    import holidays  # 0.15 s with Belgium's calendar: only when lines are enriched

    years = range(first.year, last.year + 1) if first and last else range(0)
    public = pl.Series(sorted(holidays.country_holidays("BE", years=years)), dtype=pl.Date)
    return (day.dt.weekday() >= 6) | day.is_in(public.implode())


def _code_day(lines: pl.DataFrame) -> pl.Series:
    """One integer per (code, date): six-digit codes and day numbers pack without overlap."""
    return lines.select(
        pl.col("nomenclature_code").cast(pl.Int64, strict=False) * 1_000_000 + pl.col("service_date").cast(pl.Int64)
    ).to_series()


class UseCodes:
    """Packs a third-party use ``(third_party_number, provider_nihdi, service_date)`` into one integer.

    Numbers are coded by rank among the invoices' numbers (0 for none), providers by their
    row in ``providers``, dates by their day from the first date of service; each part's
    range is known, so packing is exact and reversible.
    """

    def __init__(self, numbers: pl.Series, providers: pl.Series, first_day: date | None, days: int) -> None:
        self.numbers = numbers.drop_nulls().unique().sort().to_frame().with_row_index("_number", offset=1)
        self.providers = providers.to_frame().with_row_index("_provider")
        self.radix = max(self.providers.height, 1)
        self.first_day = pl.lit(first_day, dtype=pl.Date)
        self.days = days

    def pair(self, number: pl.Expr, provider: pl.Expr) -> pl.Expr:
        return number.fill_null(0).cast(pl.Int64) * self.radix + provider.cast(pl.Int64)

    def use(self, number: pl.Expr, provider: pl.Expr, date: pl.Expr) -> pl.Expr:
        return self.pair(number, provider) * self.days + days_between(self.first_day, date)

    def located(self, uses: pl.LazyFrame) -> pl.LazyFrame:
        """``uses`` (``_use``) with their ``_pair`` and ``service_date``, unpacked by arithmetic."""
        return uses.with_columns(
            (pl.col("_use") // self.days).alias("_pair"),
            (self.first_day + pl.duration(days=pl.col("_use") % self.days)).alias("service_date"),
        )

    def numbered(self, located: pl.LazyFrame) -> pl.LazyFrame:
        """:meth:`located` uses with their ``third_party_number`` (null for none): a join, so
        done only for the few uses that need it."""
        number = (pl.col("_pair") // self.radix).cast(pl.UInt32).alias("_number")
        return located.with_columns(number).join(self.numbers.lazy(), on="_number", how="left").drop("_number")


def registry_status(registry: pl.LazyFrame, uses: pl.Series, codes: UseCodes) -> pl.DataFrame:
    """The third-party uses the registry does not cover, with what it says of them.

    ``uses`` are distinct packed uses; the answer keeps only those whose status is not
    ``ok`` (a handful among millions), keyed by ``_use``.
    """
    valid = within("service_date", "valid_from", "valid_to")
    authorizations = (
        registry.join(codes.numbers.lazy(), on="third_party_number")
        .join(codes.providers.lazy().rename({"provider_nihdi": "authorized_nihdi"}), on="authorized_nihdi")
        .select(codes.pair(pl.col("_number"), pl.col("_provider")).alias("_pair"), "valid_from", "valid_to")
    )
    located = codes.located(uses.to_frame("_use").lazy())
    authorized = located.join(authorizations, on="_pair").filter(valid)
    others = codes.numbered(located.join(authorized, on="_use", how="anti")).drop("_pair")
    on_date = (
        others.drop_nulls("third_party_number")
        .join(
            registry.select("third_party_number", "authorized_nihdi", "valid_from", "valid_to"), on="third_party_number"
        )
        .filter(valid)
        .group_by("_use")
        .agg(pl.col("authorized_nihdi").unique().sort().str.join(", ").alias("tp_authorized_on_date"))
    )
    periods = registry.group_by("third_party_number").agg(
        pl.format("{}..{}", "valid_from", pl.col("valid_to").cast(pl.String).fill_null("open"))
        .unique()
        .sort()
        .str.join(", ")
        .alias("tp_registry_periods")
    )
    status = (
        pl.when(pl.col("third_party_number").is_null())
        .then(pl.lit("missing"))
        .when(pl.col("tp_registry_periods").is_null())
        .then(pl.lit("unregistered"))
        .when(pl.col("tp_authorized_on_date").is_null())
        .then(pl.lit("not_valid_on_date"))
        .otherwise(pl.lit("not_authorized"))
    )
    return (
        others.join(periods, on="third_party_number", how="left")
        .join(on_date, on="_use", how="left")
        .select("_use", status.alias("tp_status"), "tp_registry_periods", "tp_authorized_on_date")
        .collect()
    )


def enrich(tables: Mapping[str, pl.LazyFrame]) -> pl.DataFrame:
    """The enriched billing lines, in the order of ``billing_lines``.

    Every line must name a known provider, as the contract's reference checks ensure. Lines
    validated in a run's partition end with their invoice's row among ``third_party_invoices``
    (``INVOICE_ROW``, which the checks found): it is read, and the ids are not looked up again.
    """
    lines = tables["billing_lines"].collect()
    # Taken out in place: ``drop`` would copy every column whose chunks are not the others'.
    rows = lines.drop_in_place(INVOICE_ROW) if INVOICE_ROW in lines.columns else None
    invoices = tables["third_party_invoices"].select("invoice_id", "third_party_number", "submitted_date").collect()
    providers = tables["providers"].select("provider_nihdi", "profession", "region").collect()
    dates = lines.select(pl.col("service_date").min().alias("first"), pl.col("service_date").max().alias("last"))
    first_day, last_day = dates["first"][0], dates["last"][0]
    days = (last_day - first_day).days + 1 if lines.height else 1
    codes = UseCodes(invoices["third_party_number"], providers["provider_nihdi"], first_day, days)

    invoice_table = invoices.join(codes.numbers, on="third_party_number", how="left", maintain_order="left").select(
        "invoice_id", "third_party_number", pl.col("submitted_date").alias("_invoice_submitted"), "_number"
    )
    invoice = _lookup(lines["invoice_id"], invoice_table, millions=True) if rows is None else _rows(invoice_table, rows)
    provider = _lookup(
        lines["provider_nihdi"],
        providers.with_row_index("_provider").select(
            "provider_nihdi",
            "_provider",
            "profession",
            "region",
            pl.col("provider_nihdi").str.slice(8, 3).alias("qualification"),
        ),
    )
    if provider["_provider"].null_count():
        msg = "Some billing lines name a provider missing from 'providers'; validate the dataset first"
        raise ValueError(msg)
    context = pl.concat(
        [lines.select("service_date", "submitted_date", "channel"), invoice, provider],
        how="horizontal",
    ).select(
        "third_party_number",
        pl.coalesce("submitted_date", "_invoice_submitted").alias("effective_submitted_date"),
        pl.col("channel").is_in(THIRD_PARTY_CHANNELS).alias("is_third_party"),
        "profession",
        "region",
        "qualification",
        codes.use(pl.col("_number"), pl.col("_provider"), pl.col("service_date")).alias("_use"),
    )

    code_day = _code_day(lines)
    # Found once, then read twice by code_attributes: as a plan, Polars would find the pairs
    # among the lines twice (each read projects them differently, so they are not shared).
    pairs = lines.select("nomenclature_code", "service_date", code_day.alias("_code_day")).unique("_code_day").lazy()
    attributes = _lookup(
        code_day,
        code_attributes(tables["nomenclature"], pairs)
        .drop("nomenclature_code", "service_date")
        .select("_code_day", pl.exclude("_code_day"))
        .collect(),
    )

    # A frame of the five columns it reads: concatenating the wide attributes would copy them.
    # In one chunk each: lines read from many files come in many, and conditional
    # expressions over misaligned chunks are several times slower than the copy.
    served, typed = times_of_day(pl.col("service_time"), pl.col("encoded_at"))
    clock = (
        pl.DataFrame(
            [
                lines["service_date"],
                lines["service_time"],
                lines["encoded_at"],
                attributes["window_start"],
                attributes["window_end"],
            ]
        )
        .rechunk()
        .with_columns(served.alias("_served"), typed.alias("_typed"))
    )
    timing = clock.select(
        in_window(pl.col("service_time"), pl.col("window_start"), pl.col("window_end")).alias("service_in_window"),
        weekend_or_holiday(pl.col("service_date"), first_day, last_day).alias("weekend_or_holiday"),
        time_of_record(pl.col("service_date"), pl.col("_served"), pl.col("_typed")).alias("recorded_at"),
    )

    uses = context["_use"].filter(context["is_third_party"]).unique()
    exceptions = registry_status(tables["third_party_registry"], uses, codes)
    registry = _sparse_lookup(context["_use"], exceptions).with_columns(
        pl.when(context["is_third_party"]).then(pl.col("tp_status").fill_null("ok")).alias("tp_status")
    )
    return pl.concat([lines, context.drop("_use"), attributes, timing, registry], how="horizontal")

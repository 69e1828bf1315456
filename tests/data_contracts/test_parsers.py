"""Property tests of the value parsers: what is written in a dialect reads back exactly."""

from __future__ import annotations

from datetime import date, datetime, time

import polars as pl
from hypothesis import example, given
from hypothesis import strategies as st

from data_contracts import parsers


def _parse(parser, value: str | None, **kw) -> object:  # type: ignore[no-untyped-def]
    """``value`` parsed as the loader parses it: trimmed, then read by ``parser``."""
    frame = pl.DataFrame({"v": [value]}, schema={"v": pl.String})
    return frame.select(parser(parsers.trim(pl.col("v")), **kw))["v"][0]


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
@example(date(2024, 2, 29))
def test_dates_read_back_in_both_formats(day: date) -> None:
    assert _parse(parsers.parse_date, day.isoformat()) == day
    assert _parse(parsers.parse_date, day.strftime("%d/%m/%Y")) == day


@given(st.sampled_from(["2023-02-29", "30/02/2024", "2024-13-01", "2024/01/01", "tomorrow", "15-03-2024"]))
def test_impossible_or_foreign_dates_are_null(text: str) -> None:
    assert _parse(parsers.parse_date, text) is None


@given(st.times().map(lambda t: t.replace(microsecond=0)))
@example(time(0, 0))
@example(time(23, 59, 59))
def test_times_read_back_with_and_without_seconds(moment: time) -> None:
    assert _parse(parsers.parse_time, moment.strftime("%H:%M:%S")) == moment
    assert _parse(parsers.parse_time, moment.strftime("%H:%M")) == moment.replace(second=0)


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)).map(lambda d: d.replace(microsecond=0))
)
def test_datetimes_read_back_with_space_or_t(moment: datetime) -> None:
    for sep in (" ", "T"):
        assert _parse(parsers.parse_datetime, moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S")) == moment
        assert _parse(parsers.parse_datetime, moment.strftime(f"%Y-%m-%d{sep}%H:%M")) == moment.replace(second=0)


def test_trim_removes_exactly_the_named_white_space_for_every_character() -> None:
    """``WHITESPACE`` names exactly what :func:`parsers.trim` strips: the checks of single
    records, which strip in Python with it, read values as the loader does."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]  # surrogates are not text
    padded = [c + c + "x" + c for c in chars]
    trimmed = pl.DataFrame({"v": padded}).select(parsers.trim(pl.col("v")))["v"]
    assert trimmed.to_list() == [text.strip(parsers.WHITESPACE) for text in padded]
    assert (trimmed != "x").sum() == 0x110000 - 0x800 - len(parsers.WHITESPACE)


# Datetime-like text: the formats' characters, digits and a few that no format has.
_DATETIME_LIKE = st.one_of(
    st.text(alphabet="0123456789-:T /.+Z", max_size=24),
    st.datetimes(min_value=datetime(1, 1, 1))
    .map(str)
    .flatmap(
        lambda text: st.sampled_from([text, text.replace(" ", "T"), text[:16], text[:19] + ":00", " " + text[:19]])
    ),
)


@given(st.lists(_DATETIME_LIKE, min_size=1, max_size=20))
@example(["2024-03-01 10:15:00:00", "2024-03-01 10:15:00.5", "2024-03-01T10:15Z", "2024-03-01 T10:15", "T:"])
def test_datetimes_parse_as_if_every_format_were_tried_on_every_value(texts: list[str]) -> None:
    """The parser skips formats a value cannot match (colons, ``T``): never one it could."""
    text = pl.col("v").str.strip_chars()
    every_format = pl.coalesce(
        *(text.str.to_datetime(fmt, strict=False, time_unit="us") for fmt in parsers.DATETIME_FORMATS)
    )
    frame = pl.DataFrame({"v": texts}, schema={"v": pl.String})
    assert frame.select(parsers.parse_datetime(parsers.trim(pl.col("v")))).equals(frame.select(every_format))


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False, allow_infinity=False))
@example(0)
def test_decimals_with_point_or_comma(value: object) -> None:
    text = f"{value:.2f}"
    assert _parse(parsers.parse_decimal, text, decimal_comma=False) == float(text)
    assert _parse(parsers.parse_decimal, text.replace(".", ","), decimal_comma=True) == float(text)
    assert _parse(parsers.parse_decimal, text.replace(".", ","), decimal_comma=False) is None


@given(st.sampled_from(["inf", "NaN", "1e3", "12.5.1", "", "€5"]))
def test_non_decimal_notation_is_null(text: str) -> None:
    assert _parse(parsers.parse_decimal, text, decimal_comma=True) is None


@given(st.text(alphabet="0123456789", min_size=0, max_size=14))
@example("01234567890")
def test_nihdi_is_exactly_eleven_digits_leading_zeros_kept(text: str) -> None:
    matches = pl.DataFrame({"v": [text]}).select(parsers.exact_digits(pl.col("v"), 11))["v"][0]
    assert matches is (len(text) == 11)
    assert _parse(parsers.parse_text, text) == (text or None)


@given(st.text(alphabet="0123456789+- _.x\n١", min_size=0, max_size=12))
@example("+1234567890")
@example("-1234567890")
@example(" 1234567890")
@example("1234567890 ")
@example("١٢٣٤٥٦٧٨٩٠١")  # Arabic-Indic digits: digits to Unicode, not to the contract
def test_exact_digits_are_ascii_digits_and_nothing_else(text: str) -> None:
    matches = pl.DataFrame({"v": [text]}).select(parsers.exact_digits(pl.col("v"), 11))["v"][0]
    assert matches is (len(text) == 11 and text.isascii() and text.isdigit())


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)))
@example(datetime(1899, 12, 31, 23, 59, 59, 999999))
@example(datetime(1900, 1, 1))
@example(datetime(2199, 12, 31, 23, 59, 59, 999999))
@example(datetime(2200, 1, 1))
def test_dates_and_datetimes_are_kept_exactly_within_the_plausible_years(moment: datetime) -> None:
    frame = pl.DataFrame(
        {"day": [moment.date()], "moment": [moment]}, schema={"day": pl.Date, "moment": pl.Datetime("us")}
    )
    kept = frame.select(parsers.within_years(pl.col("day")), parsers.within_years(pl.col("moment"))).row(0)
    plausible = parsers.DATE_YEARS[0] <= moment.year <= parsers.DATE_YEARS[1]
    assert kept == ((moment.date(), moment) if plausible else (None, None))

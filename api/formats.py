"""Numbers, amounts, percentages and dates as a Belgian reader expects them, per language.

French and Dutch documents write ``1.234,56 €`` and ``03/12/2026`` (Belgian administrative
usage: a dot between thousands, a decimal comma, the euro sign after the amount, the day
first); English ones ``€1,234.56`` and ``3 Dec 2026``. CLDR's ``fr_BE`` groups thousands with
a narrow space instead, which is why these few rules are written out here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Literal, get_args

Lang = Literal["fr", "nl", "en"]
LANGUAGES: tuple[str, ...] = get_args(Lang)
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def number(value: float, lang: Lang, digits: int = 0) -> str:
    """``value`` rounded to ``digits`` decimals, with the language's separators."""
    text = f"{value:,.{digits}f}"
    if lang == "en":
        return text
    return text.replace(",", "\0").replace(".", ",").replace("\0", ".")


def amount(value: float, lang: Lang) -> str:
    """An amount in euros, to the cent."""
    if lang == "en":
        return f"-€{number(-value, lang, 2)}" if value < 0 else f"€{number(value, lang, 2)}"
    return f"{number(value, lang, 2)}\u00a0€"


def percent(share: float, lang: Lang, digits: int = 1) -> str:
    """A share (0.123) as a percentage (``12,3 %`` in French and Dutch, ``12.3%`` in English)."""
    text = number(100 * share, lang, digits)
    return f"{text}%" if lang == "en" else f"{text}\u00a0%"


def day(value: date, lang: Lang) -> str:
    """A date: ``03/12/2026`` in French and Dutch, ``3 Dec 2026`` in English."""
    if lang == "en":
        return f"{value.day} {_MONTHS_EN[value.month - 1]} {value.year}"
    return value.strftime("%d/%m/%Y")


def formatter(kind: str, lang: Lang) -> Callable[[float], str]:
    """How a value of ``kind`` (a ``share``, an ``amount`` or a ``level``) is written in ``lang``."""
    if kind == "share":
        return lambda v: percent(v, lang)
    if kind == "amount":
        return lambda v: amount(v, lang)
    return lambda v: number(v, lang, 1)

"""Documents written for providers (feedback profiles, campaign letters): language and rendering.

Templates and their words live in ``api/templates`` (``texts.yaml`` holds every sentence in
French, Dutch and English); every template gets the words of its language as ``t`` and the
Belgian formats of :mod:`api.formats` as ``number``, ``amount``, ``percent``, plus ``today``.
Jinja2 escapes every value, so nothing a dataset holds can become markup.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from api import formats
from api.formats import Lang

TEMPLATES = Path(__file__).parent / "templates"
# Languages by region: Flanders reads Dutch, Wallonia and Brussels French.
REGION_LANGUAGE: dict[str, Lang] = {"VLA": "nl", "WAL": "fr", "BRU": "fr"}


def language_of(region: str | None) -> Lang:
    """The language a provider is written to: from their region, English when unknown."""
    return REGION_LANGUAGE.get(region or "", "en")


@cache
def texts() -> dict[str, dict[str, Any]]:
    """The documents' words per language (``templates/texts.yaml``)."""
    loaded: dict[str, dict[str, Any]] = yaml.safe_load((TEMPLATES / "texts.yaml").read_text(encoding="utf-8"))
    return loaded


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, lang: Lang, **context: Any) -> str:
    """``template`` in ``lang``, with the language's words and formats."""
    return (
        _environment()
        .get_template(template)
        .render(
            lang=lang,
            t=texts()[lang],
            number=lambda v, digits=0: formats.number(v, lang, digits),
            amount=lambda v: formats.amount(v, lang),
            percent=lambda v: formats.percent(v, lang),
            today=formats.day(date.today(), lang),
            **context,
        )
    )

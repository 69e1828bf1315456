"""Rule declarations: loaded from YAML, validated once, versioned by legislation.

A declaration says *what* a rule flags (id, titles, legal basis, parameters and one or
more checks of a known shape); ``shapes.py`` says *how* each shape is evaluated.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from datetime import date
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from rules.errors import CatalogError, LegislationError

Number = int | float
PLACEHOLDER = re.compile(r"\{(\w+)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Translations(_Strict):
    """One text in the three languages of the service."""

    fr: str
    nl: str
    en: str

    def __getitem__(self, lang: str) -> str:
        return str(getattr(self, lang))


class Parameter(_Strict):
    default: Number
    minimum: Number | None = None
    by_legislation: dict[str, Number] = Field(default_factory=dict)
    description: str = ""

    def value(self, legislation: str) -> Number:
        return self.by_legislation.get(legislation, self.default)


class Regime(_Strict):
    name: str
    when: str
    years: str | None = None
    months_after_month_end: str | None = None

    @model_validator(mode="after")
    def _one_delay(self) -> Regime:
        if (self.years is None) == (self.months_after_month_end is None):
            msg = f"regime '{self.name}' needs exactly one of 'years' or 'months_after_month_end'"
            raise ValueError(msg)
        return self


class DeadlineCheck(_Strict):
    """Flag when ``compare`` is after a deadline set by the first matching regime."""

    shape: Literal["deadline"]
    compare: str
    regimes: list[Regime] = Field(min_length=1)
    reason_prefix: str = "late_"


class LinePredicateCheck(_Strict):
    """Flag every line where ``when`` holds."""

    shape: Literal["line_predicate"]
    when: str
    reason: str | None = None
    reason_column: str | None = None
    evidence: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_reason(self) -> LinePredicateCheck:
        if (self.reason is None) == (self.reason_column is None):
            raise ValueError("needs exactly one of 'reason' or 'reason_column'")
        return self


class BurstCheck(_Strict):
    """Flag lines in runs of ``min_run`` or more, each within the gap of the previous one."""

    shape: Literal["burst"]
    reason: str
    where: str
    partition_by: list[str] = Field(min_length=1)
    order_by: str
    max_gap_minutes: str | Number
    min_run: str | Number
    evidence: list[str] = Field(default_factory=list)


class YearsAfter(_Strict):
    """A reference date ``years`` years after another (29 February gives 28 February)."""

    date: str
    years: str | Number


class ReferencePeriodCheck(_Strict):
    """Flag lines whose date falls in a period of a reference table for the same key.

    ``having`` keeps the (line, reference row) pairs that count; with ``total``, a line is
    flagged when the ``total`` column of the rows that count adds up to ``at_least``.
    ``years_after`` derives reference dates the conditions need (the end of a plan).
    """

    shape: Literal["reference_period"]
    reason: str | None = None
    reason_column: str | None = None
    table: str
    date: str = "service_date"
    key: str
    start: str
    end: str
    end_inclusive: bool
    where: str | None = None
    having: str | None = None
    years_after: dict[str, YearsAfter] = Field(default_factory=dict)
    total: str | None = None
    at_least: str | Number | None = None
    evidence: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ReferencePeriodCheck:
        if (self.reason is None) == (self.reason_column is None):
            raise ValueError("needs exactly one of 'reason' or 'reason_column'")
        if (self.total is None) != (self.at_least is None):
            raise ValueError("'total' and 'at_least' go together")
        return self


class DuplicateKeyCheck(_Strict):
    """Flag every line of a key group but the first by ``keep_first_by``."""

    shape: Literal["duplicate_key"]
    reason: str
    key: list[str] = Field(min_length=1)
    keep_first_by: list[str] = Field(min_length=1)
    evidence: list[str] = Field(default_factory=list)


Check = Annotated[
    DeadlineCheck | LinePredicateCheck | BurstCheck | ReferencePeriodCheck | DuplicateKeyCheck,
    Field(discriminator="shape"),
]


class RuleDeclaration(_Strict):
    id: str = Field(pattern=r"^[A-Z][A-Z0-9_]+$")
    titles: Translations
    # Why the rule matters, in plain words for the provider (feedback profiles, letters).
    why: Translations | None = None
    legal_basis: str
    description: str
    severity: Literal["low", "medium", "high"]
    amount: str = "amount_reimbursed"
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    checks: list[Check] = Field(min_length=1)

    def parameters_for(self, legislation: str) -> dict[str, Number]:
        return {name: p.value(legislation) for name, p in self.parameters.items()}

    def resolve(self, value: str | Number, legislation: str) -> Number:
        """A literal number, or the value of the named parameter."""
        return self.parameters[value].value(legislation) if isinstance(value, str) else value

    def sql_text(self, text: str, legislation: str) -> str:
        """A SQL fragment with its ``{parameter}`` placeholders replaced by their values."""
        values = self.parameters_for(legislation)
        return PLACEHOLDER.sub(lambda m: repr(values[m.group(1)]), text)

    def sql(self, text: str, legislation: str) -> pl.Expr:
        """A Polars expression from a SQL fragment with ``{parameter}`` placeholders."""
        return pl.sql_expr(self.sql_text(text, legislation))


class Legislation(_Strict):
    """A version of the law; with ``effective_from``, only lines served from that day follow it."""

    description: str
    effective_from: date | None = None


def _legislation(value: object) -> object:
    return {"description": value} if isinstance(value, str) else value


class Catalog(_Strict):
    legislations: dict[str, Annotated[Legislation, BeforeValidator(_legislation)]]
    rules: list[RuleDeclaration]

    def __iter__(self) -> Iterator[RuleDeclaration]:  # type: ignore[override]
        return iter(self.rules)

    @cached_property
    def version(self) -> str:
        """A fingerprint of every declaration: two runs with the same version ran the same rules."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    def rule(self, rule_id: str) -> RuleDeclaration:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        msg = f"Unknown rule '{rule_id}'; known: {', '.join(r.id for r in self.rules)}"
        raise CatalogError(msg)

    def check_legislation(self, legislation: str) -> None:
        if legislation not in self.legislations:
            msg = f"Unknown legislation '{legislation}'; known: {', '.join(self.legislations)}"
            raise LegislationError(msg)

    def effective_from(self, legislation: str, override: date | None = None) -> date | None:
        """The first date of service ``legislation`` governs (None: every line)."""
        self.check_legislation(legislation)
        if legislation == "current":
            return None
        return override or self.legislations[legislation].effective_from

    def differing_rules(self, legislation: str, baseline: str) -> list[str]:
        """Rules whose parameters differ between the two legislations."""
        return [r.id for r in self.rules if r.parameters_for(legislation) != r.parameters_for(baseline)]


def _sql_fragments(check: Check) -> Iterator[tuple[str, str]]:
    if isinstance(check, DeadlineCheck):
        yield from ((f"regimes.{r.name}.when", r.when) for r in check.regimes)
    elif isinstance(check, LinePredicateCheck):
        yield "when", check.when
    elif isinstance(check, BurstCheck):
        yield "where", check.where
    elif isinstance(check, ReferencePeriodCheck):
        yield from ((f, t) for f, t in (("where", check.where), ("having", check.having)) if t)


def _parameter_refs(check: Check) -> Iterator[tuple[str, str | Number]]:
    if isinstance(check, DeadlineCheck):
        for regime in check.regimes:
            yield f"regimes.{regime.name}", regime.years or regime.months_after_month_end or ""
    elif isinstance(check, BurstCheck):
        yield "max_gap_minutes", check.max_gap_minutes
        yield "min_run", check.min_run
    elif isinstance(check, ReferencePeriodCheck):
        if check.at_least is not None:
            yield "at_least", check.at_least
        for name, derived in check.years_after.items():
            yield f"years_after.{name}", derived.years


def _validate_semantics(rule: RuleDeclaration, legislations: Mapping[str, Legislation]) -> None:
    """Checks pydantic cannot express; each message names the rule and the field."""
    for name, param in rule.parameters.items():
        for legislation in legislations:
            value = param.value(legislation)
            if param.minimum is not None and value < param.minimum:
                msg = (
                    f"The '{name}' parameter of rule {rule.id} must be at least {param.minimum}"
                    f"{'' if legislation == 'current' else f' (legislation {legislation})'}. Got {value}."
                )
                raise CatalogError(msg)
        unknown = set(param.by_legislation) - set(legislations)
        if unknown:
            msg = f"The '{name}' parameter of rule {rule.id} names unknown legislation(s) {sorted(unknown)}."
            raise CatalogError(msg)
    for position, check in enumerate(rule.checks, start=1):
        where = f"rule {rule.id}, check {position} ({check.shape})"
        for field, ref in _parameter_refs(check):
            if isinstance(ref, str) and ref not in rule.parameters:
                msg = f"In {where}, '{field}' refers to unknown parameter '{ref}'."
                raise CatalogError(msg)
        for field, text in [*_sql_fragments(check), ("amount", rule.amount)]:
            for placeholder in PLACEHOLDER.findall(text):
                if placeholder not in rule.parameters:
                    msg = f"In {where}, '{field}' uses unknown parameter {{{placeholder}}}."
                    raise CatalogError(msg)
            try:
                rule.sql(text, "current")
            except (pl.exceptions.PolarsError, ValueError) as exc:
                msg = f"In {where}, '{field}' is not a valid SQL expression: {str(exc).splitlines()[0]}"
                raise CatalogError(msg) from exc


def _pydantic_message(exc: ValidationError, document: dict[str, object]) -> str:
    error = exc.errors()[0]
    loc = list(error["loc"])
    rule_id = "?"
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = document.get("rules") or []
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule_id = str(rules[loc[1]].get("id", f"#{loc[1] + 1}"))
        field = ".".join(str(p) for p in loc[2:]) or "(declaration)"
        return f"Rule {rule_id}, field '{field}': {error['msg']}."
    return f"Catalog field '{'.'.join(str(p) for p in loc)}': {error['msg']}."


def parse_catalog(text: str, *, source: str = "catalog") -> Catalog:
    """Validate a YAML catalog; every error names the rule and the field."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{source} is not valid YAML: {exc}"
        raise CatalogError(msg) from exc
    if not isinstance(document, dict):
        msg = f"{source} must be a mapping with 'legislations' and 'rules'"
        raise CatalogError(msg)
    try:
        catalog = Catalog.model_validate(document)
    except ValidationError as exc:
        raise CatalogError(_pydantic_message(exc, document)) from exc
    if "current" not in catalog.legislations:
        raise CatalogError("The catalog must declare the legislation 'current'.")
    seen: set[str] = set()
    for rule in catalog:
        if rule.id in seen:
            msg = f"Rule {rule.id} is declared twice."
            raise CatalogError(msg)
        seen.add(rule.id)
        _validate_semantics(rule, catalog.legislations)
    return catalog


def load_catalog(path: Path | str | None = None) -> Catalog:
    """The shipped catalog, or the one at ``path``."""
    if path is None:
        return _default_catalog()
    path = Path(path)
    return parse_catalog(path.read_text(encoding="utf-8"), source=str(path))


@cache
def _default_catalog() -> Catalog:
    text = (resources.files("rules") / "catalog.yaml").read_text(encoding="utf-8")
    return parse_catalog(text, source="rules/catalog.yaml")

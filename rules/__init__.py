"""The control-rule catalog: declarations, their compilation to Polars, and what-if analysis."""

from rules.catalog import Catalog, RuleDeclaration, load_catalog, parse_catalog
from rules.engine import FLAGS_SCHEMA, enriched_lines, evaluate, summarise
from rules.errors import CatalogError, LegislationError, RuleError
from rules.whatif import whatif

__all__ = [
    "FLAGS_SCHEMA",
    "Catalog",
    "CatalogError",
    "LegislationError",
    "RuleDeclaration",
    "RuleError",
    "enriched_lines",
    "evaluate",
    "load_catalog",
    "parse_catalog",
    "summarise",
    "whatif",
]

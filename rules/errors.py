"""Errors of the rule catalog.

RuleError (ValueError)
├── CatalogError        a declaration is malformed (names the rule and the field)
└── LegislationError    an unknown legislation version was asked for
"""

from __future__ import annotations


class RuleError(ValueError):
    """Root of every rule-catalog error."""


class CatalogError(RuleError):
    pass


class LegislationError(RuleError):
    pass

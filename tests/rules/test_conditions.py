"""The catalog's SQL conditions rewritten for pattern matching mean what Polars SQL means."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import load_catalog
from rules.conditions import Column, Compare, Conjunction, IsNull, disjunctive_form, not_true_form
from rules.errors import RuleError

CONDITIONS = [
    "a = 'x' AND NOT (b < c OR d IS NULL)",
    "NOT (b >= c AND b < d)",
    "flag AND a IN ('x', 'y')",
    "a NOT IN ('x') OR NOT flag",
    "b >= 2 AND (d IS NULL OR d > b OR NOT flag)",
    "TRUE",
    "a <> 'y' AND c IS NOT NULL",
]


def _value(row: dict[str, Any], side: Any) -> Any:
    return row[side.name] if isinstance(side, Column) else side


def _holds(row: dict[str, Any], conjunction: Conjunction) -> bool:
    for atom in conjunction:
        if isinstance(atom, IsNull):
            if (row[atom.column] is None) == atom.negated:
                return False
            continue
        left, right = _value(row, atom.left), _value(row, atom.right)
        if left is None or right is None:
            return False
        ops = {"=": left == right, "!=": left != right, "<": left < right, "<=": left <= right}
        ops |= {">": left > right, ">=": left >= right}
        if not ops[atom.op]:
            return False
    return True


rows = st.lists(
    st.fixed_dictionaries(
        {
            "a": st.none() | st.sampled_from(["x", "y", "z"]),
            "b": st.none() | st.integers(0, 4),
            "c": st.none() | st.integers(0, 4),
            "d": st.none() | st.integers(0, 4),
            "flag": st.none() | st.booleans(),
        }
    ),
    min_size=1,
    max_size=30,
)


@pytest.mark.parametrize("condition", CONDITIONS)
@settings(max_examples=60, deadline=None)
@given(rows=rows)
def test_rewritten_conditions_select_what_polars_selects(condition: str, rows: list[dict[str, Any]]) -> None:
    frame = pl.DataFrame(rows, schema={"a": pl.String, "b": pl.Int64, "c": pl.Int64, "d": pl.Int64, "flag": pl.Boolean})
    flags = frame.with_columns(pl.sql_expr(condition).alias("v"))["v"].to_list()
    alternatives = disjunctive_form(condition)
    otherwise = not_true_form(condition)
    for row, value in zip(rows, flags, strict=True):
        assert any(_holds(row, c) for c in alternatives) == (value is True)
        assert any(_holds(row, c) for c in otherwise) == (value is not True)


def test_every_catalog_condition_can_be_rewritten() -> None:
    for rule in load_catalog():
        for check in rule.checks:
            texts = [getattr(check, name, None) for name in ("when", "where", "having")]
            texts += [r.when for r in getattr(check, "regimes", [])]
            for text in filter(None, texts):
                assert disjunctive_form(rule.sql_text(text, "current")), (rule.id, text)


def test_negation_is_pushed_onto_atoms() -> None:
    assert disjunctive_form("NOT (b < c)") == [(Compare(">=", Column("b"), Column("c")),)]
    assert not_true_form("b IS NULL") == [(IsNull("b", negated=True),)]
    assert disjunctive_form("FALSE") == []


@pytest.mark.parametrize("text", ["a = ", "a LIKE 'x%'", "(a = 'x'", "'x' IS NULL", "a = 'x' b"])
def test_unreadable_conditions_are_named_in_the_error(text: str) -> None:
    with pytest.raises(RuleError, match="condition"):
        disjunctive_form(text)

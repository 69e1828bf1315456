"""The durable_rules back end flags exactly what the Polars engine flags, on generated datasets.

Small datasets are drawn around the contract's boundaries (``tests.boundaries``); the two back
ends must agree rule by rule, reason and evidence included, under both legislations and a dated
reform.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from polars.testing import assert_frame_equal

from data_contracts import load_dataset
from rules import evaluate
from rules.durable_engine import evaluate_durable
from tests import factories as f
from tests.boundaries import BURST, DEADLINE, DEBT, VERSIONS, on_boundary_datasets


@on_boundary_datasets(draws=40)
def test_durable_rules_flags_what_polars_flags(dataset: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tables = load_dataset(f.write_dataset(Path(tmp), **dataset)).lazy_tables()
        for version in VERSIONS:
            batch = evaluate(tables, **version)
            assert_frame_equal(evaluate_durable(tables, **version), batch)


def test_the_pinned_examples_do_flag(tmp_path: Path) -> None:
    expected = {"B": {"EVENING_VISIT_MISCODING"}, "D": {"LATE_ATTESTATION"}, "T": {"DEBT_BLOCKED_BILLING"}}
    for name, dataset in {"B": BURST, "D": DEADLINE, "T": DEBT}.items():
        flags = evaluate(load_dataset(f.write_dataset(tmp_path / name, **dataset)).lazy_tables())
        assert set(flags["rule_id"]) == expected[name]

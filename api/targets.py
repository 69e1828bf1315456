"""Targets against actuals in the annual report, where targets are configured.

A targets file (``SECM_REPORT_TARGETS``, or ``SECM_HOME/targets.yaml``) names, per year, figures
of the report by their path, keys joined by dots, and the value each should reach::

    2024:
      cases.opened: 120
      cases.sanctions: 10
      datamatchings.LATE_ATTESTATION.cases_opened: 20
      sensitisation.late-nurses-2024.contacted: 30

In a list, an item is named by its id (``rule_id``, ``name``, ``insurer_code`` or ``value``).
A figure that is suppressed, or that the report does not have, has no actual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ITEM_KEYS = ("rule_id", "name", "insurer_code", "value")


def load_targets(path: Path | None, year: int) -> dict[str, float]:
    """The targets of ``year`` in ``path`` (none without a file); a clear error for a bad one."""
    if path is None:
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"Cannot read the targets file {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"The targets file {path} must map years to figures and their targets")
    targets = document.get(year, document.get(str(year))) or {}
    if not isinstance(targets, dict) or not all(isinstance(v, int | float) for v in targets.values()):
        raise ValueError(f"The targets of {year} in {path} must map figures to numbers")
    return {str(k): float(v) for k, v in targets.items()}


def _figure(report: dict[str, Any], path: str) -> Any:
    node: Any = report
    for key in path.split("."):
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list):
            node = next((i for i in node if any(str(i.get(k)) == key for k in ITEM_KEYS)), None)
        else:
            return None
    return node if isinstance(node, int | float) and not isinstance(node, bool) else None


def against_targets(report: dict[str, Any], targets: dict[str, float]) -> list[dict[str, Any]]:
    """Per target: the figure, its target, the report's actual and whether it was reached."""
    rows = []
    for figure, target in targets.items():
        actual = _figure(report, figure)
        rows.append(
            {
                "figure": figure,
                "target": target,
                "actual": actual,
                "reached": None if actual is None else actual >= target,
            }
        )
    return rows

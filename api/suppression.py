"""Small-cell suppression of the annual report: no published figure singles out a few providers.

A cell that counts fewer than ``minimum`` providers (or, where a cell counts lines or cases,
fewer than ``minimum`` of those), but more than none, is published as ``null`` with the row
marked ``suppressed``, and so are the figures that would give it away (its amount, its share,
its change against last year). Totals are not cells: they stay. The report says how many
cells were suppressed and under which minimum, so that every export writes ``<5`` where the
JSON has ``null``. It is applied to the figures before any export; the unsuppressed report is
for internal use, and every read of it is audited by the caller.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_MINIMUM = 5


class _Suppressor:
    def __init__(self, minimum: int) -> None:
        self.minimum = minimum
        self.cells = 0

    def small(self, value: Any) -> bool:
        return isinstance(value, int | float) and 0 < value < self.minimum

    def hide(self, row: dict[str, Any], keys: tuple[str, ...], marked: dict[str, Any] | None = None) -> None:
        """Null ``keys`` of ``row`` and mark ``marked`` (the row itself unless given) suppressed."""
        for key in keys:
            if row.get(key) is not None:
                row[key] = None
                self.cells += 1
        (row if marked is None else marked)["suppressed"] = True


RULE_FIGURES = ("lines_flagged", "providers", "amount_at_stake_eur", "share_of_billed")
CHANGE_FIGURES = ("lines_flagged", "amount_at_stake_eur", "previous_lines_flagged", "previous_amount_at_stake_eur")


RECOVERY_AMOUNTS = ("amount_to_recover_eur", "amount_recovered_eur")


def suppress(report: dict[str, Any], minimum: int = DEFAULT_MINIMUM) -> dict[str, Any]:
    """A copy of ``report`` with its small cells suppressed (see the module docstring)."""
    out = copy.deepcopy(report)
    s = _Suppressor(minimum)
    small_rules = set()
    for rule in out["rules"]:
        if s.small(rule["providers"]):
            small_rules.add(rule["rule_id"])
            s.hide(rule, RULE_FIGURES)
        if s.small(rule.get("investigated")) or s.small(rule.get("confirmed")):
            s.hide(rule, ("investigated", "confirmed", "confirmed_share"))
    for change in out["year_over_year"]:
        if change["rule_id"] in small_rules:
            s.hide(change, CHANGE_FIGURES)
    for items in out["breakdowns"].values():
        for item in items:
            if s.small(item["providers"]):
                s.hide(item, ("lines_flagged", "providers", "amount_at_stake_eur"))
    for insurer in out["data_quality"]:
        if s.small(insurer["pseudo_number_lines"]):
            s.hide(insurer, ("pseudo_number_lines", "pseudo_number_rate"))
        for channel in insurer["late_billing_by_channel"].values():
            if s.small(channel["late"]):
                s.hide(channel, ("late", "rate"))
        reasons = insurer["quarantined_rows_by_reason"]
        small = [reason for reason, n in reasons.items() if s.small(n)]
        if small:
            s.hide(reasons, tuple(small), marked=insurer)
    flagged_lines = {
        i["insurer_code"]: i["numerator"] for i in out["insurer_indicators"] if i["indicator"] == "flagged_line_rate"
    }
    for indicator in out["insurer_indicators"]:
        # An amount is suppressed with the flagged lines it sums; any other numerator counts lines.
        amount = indicator["indicator"] == "amount_at_stake_share"
        if s.small(flagged_lines.get(indicator["insurer_code"]) if amount else indicator["numerator"]):
            s.hide(indicator, ("numerator", "rate"))
    cases = out["cases"]
    for count, amount in (
        ("confirmed", "amount_to_recover_eur"),
        ("sanctions", "sanctions_eur"),
        ("cases_recovered_on", "amount_recovered_eur"),
    ):
        if s.small(cases.get(count)):
            s.hide(cases, (count, amount))
    small_counts = tuple(k for k, v in cases.items() if k != "suppressed" and isinstance(v, int) and s.small(v))
    if small_counts:
        s.hide(cases, small_counts)
    anomalies = out["anomaly_detection"]
    if s.small(anomalies.get("cases_opened_on_top_decile")):
        s.hide(anomalies, ("cases_opened_on_top_decile",))
    for matching in out["datamatchings"]:
        if s.small(matching["providers_hit"]):
            s.hide(matching, ("lines_hit", "providers_hit"))
        if s.small(matching["cases_opened"]):
            s.hide(matching, ("cases_opened", "confirmed", "unfounded", *RECOVERY_AMOUNTS))
        elif s.small(matching["confirmed"]) or s.small(matching["unfounded"]):
            s.hide(matching, ("confirmed", "unfounded", *RECOVERY_AMOUNTS))
    for campaign in out["sensitisation"]:
        if s.small(campaign["contacted"]) or s.small(campaign["comparison"]):
            s.hide(campaign, ("contacted", "comparison", "effect", "ci_low", "ci_high"))
    out["suppression"] = {"minimum": minimum, "suppressed_cells": s.cells}
    return out


def shown(value: Any, row: dict[str, Any], report: dict[str, Any]) -> Any:
    """What an export writes for a figure of ``row``: ``<5`` where it was suppressed."""
    suppression = report.get("suppression")
    if value is None and row.get("suppressed") and suppression and suppression["minimum"]:
        return f"<{suppression['minimum']}"
    return value

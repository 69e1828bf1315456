"""The ten rules written by hand in pandas: the baseline the Polars engine is compared to.

Vectorised pandas over the same enriched lines, as an analyst would write it; not part of
the product, so it reads the rule parameters as literals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _late(lines: pd.DataFrame, years: int) -> pd.Series:
    service = lines["service_date"]
    by_years = service + pd.DateOffset(years=years)
    month_end = lambda months: (service + pd.DateOffset(months=months)) + pd.offsets.MonthEnd(0)  # noqa: E731
    deadline = np.select(
        [
            lines["institution_nihdi"].notna(),
            (lines["channel"] == "efact") & (lines["profession"] == "nurse"),
            lines["channel"] == "paper_third_party",
        ],
        [by_years, month_end(1), month_end(2)],
        default=by_years,
    )
    return lines["effective_submitted_date"] > pd.to_datetime(deadline)


def _bursts(lines: pd.DataFrame) -> pd.Series:
    home = lines[(lines["time_window"] == "evening") & (lines["code_setting"] == "home") & lines["encoded_at"].notna()]
    home = home.sort_values(["provider_nihdi", "service_date", "recorded_at", "claim_id"])
    same = (home["provider_nihdi"] == home["provider_nihdi"].shift()) & (
        home["service_date"] == home["service_date"].shift()
    )
    continues = same & (home["recorded_at"] - home["recorded_at"].shift() < pd.Timedelta(minutes=10))
    run = (~continues).cumsum()
    return home["claim_id"][run.map(run.value_counts()) >= 3]


def _periods(
    lines: pd.DataFrame, table: pd.DataFrame, start: str, end: str, inclusive: bool, on: str = "service_date"
) -> pd.DataFrame:
    joined = lines.merge(table, on="provider_nihdi", suffixes=("", "_reference"))
    last = joined[end].fillna(pd.Timestamp("2262-01-01"))
    before_end = joined[on] <= last if inclusive else joined[on] < last
    return joined[(joined[start] <= joined[on]) & before_end]


def _outside(lines: pd.DataFrame, window: str) -> pd.Series:
    """A code of this time window served outside it (windows ending before they start wrap)."""
    t = {c: pd.to_timedelta(lines[c].astype("string")) for c in ("service_time", "window_start", "window_end")}
    straight = (t["service_time"] >= t["window_start"]) & (t["service_time"] < t["window_end"])
    wrapped = (t["service_time"] >= t["window_start"]) | (t["service_time"] < t["window_end"])
    inside = np.where(t["window_start"] <= t["window_end"], straight, wrapped)
    return (lines["time_window"] == window) & t["service_time"].notna() & ~inside


def _debts(lines: pd.DataFrame, debts: pd.DataFrame) -> pd.Series:
    """Lines whose provider's open debts without a plan in force (5 years) sum to 50 000 EUR."""
    debt = _periods(lines, debts, "debt_from", "debt_to", inclusive=False)
    plan_end = debt["plan_from"] + pd.DateOffset(years=5)
    in_force = debt["plan_respected"].fillna(False).astype(bool) & (debt["plan_from"] <= debt["service_date"])
    in_force &= debt["service_date"] < plan_end
    owed = debt[~in_force].groupby("claim_id")["amount_eur"].sum()
    return pd.Series(owed.index[owed >= 50_000])


def pandas_flags(
    lines: pd.DataFrame, suspensions: pd.DataFrame, debts: pd.DataFrame, statuses: pd.DataFrame, years: int = 2
) -> set[tuple[str, str]]:
    """``(claim_id, rule_id)`` of every flag."""
    tp = lines["is_third_party"]
    during = _periods(lines[tp], suspensions, "start_date", "end_date", inclusive=True)
    invoiced = _periods(lines[tp], suspensions, "start_date", "end_date", inclusive=True, on="effective_submitted_date")
    key = ["patient_id", "provider_nihdi", "nomenclature_code", "service_date", "service_time"]
    ordered = lines.sort_values(["effective_submitted_date", "claim_id"])
    not_weekend = (lines["time_window"] == "weekend") & ~lines["weekend_or_holiday"].astype(bool)
    setting = lines["code_setting"].astype("string")
    place = lines["place_of_service"].astype("string")
    nonconform = (lines["code_profession"].astype("string") != lines["profession"].astype("string")) | (
        (setting != "any") & place.notna() & (place != setting)
    )
    nonconform = nonconform.fillna(False).astype(bool) | ~lines["code_in_force"].astype(bool)
    flagged = {
        "LATE_ATTESTATION": lines["claim_id"][_late(lines, years)],
        "PSEUDO_TP_NUMBER": lines["claim_id"][
            tp & lines["tp_status"].isin(["missing", "unregistered", "not_valid_on_date"])
        ],
        "TP_NUMBER_NOT_AUTHORIZED": lines["claim_id"][tp & (lines["tp_status"] == "not_authorized")],
        "EVENING_VISIT_MISCODING": pd.concat([lines["claim_id"][_outside(lines, "evening")], _bursts(lines)]),
        "NIGHT_WEEKEND_MISCODING": lines["claim_id"][_outside(lines, "night") | not_weekend],
        "NOMENCLATURE_NONCONFORMITY": lines["claim_id"][nonconform],
        "TP_SUSPENDED_BILLING": pd.concat([during["claim_id"], invoiced["claim_id"]]),
        "DEBT_BLOCKED_BILLING": _debts(lines, debts),
        "DUPLICATE_BILLING": ordered["claim_id"][ordered.duplicated(key, keep="first")],
        "PROVIDER_NOT_ENTITLED": _periods(lines, statuses, "from_date", "to_date", inclusive=True)["claim_id"],
    }
    return {(claim, rule) for rule, claims in flagged.items() for claim in claims}

"""The seven rules written by hand in pandas: the baseline the Polars engine is compared to.

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
    home = home.sort_values(["provider_nihdi", "service_date", "encoded_at", "claim_id"])
    same = (home["provider_nihdi"] == home["provider_nihdi"].shift()) & (
        home["service_date"] == home["service_date"].shift()
    )
    continues = same & (home["encoded_at"] - home["encoded_at"].shift() < pd.Timedelta(minutes=10))
    run = (~continues).cumsum()
    return home["claim_id"][run.map(run.value_counts()) >= 3]


def _periods(lines: pd.DataFrame, table: pd.DataFrame, start: str, end: str, inclusive: bool) -> pd.DataFrame:
    joined = lines.merge(table, on="provider_nihdi", suffixes=("", "_reference"))
    last = joined[end].fillna(pd.Timestamp("2262-01-01"))
    before_end = joined["service_date"] <= last if inclusive else joined["service_date"] < last
    return joined[(joined[start] <= joined["service_date"]) & before_end]


def pandas_flags(
    lines: pd.DataFrame, suspensions: pd.DataFrame, debts: pd.DataFrame, years: int = 2
) -> set[tuple[str, str]]:
    """``(claim_id, rule_id)`` of every flag."""
    tp = lines["is_third_party"]
    times = {c: pd.to_timedelta(lines[c].astype("string")) for c in ("service_time", "window_start", "window_end")}
    outside = (lines["time_window"] == "evening") & times["service_time"].notna()
    outside &= ~((times["service_time"] >= times["window_start"]) & (times["service_time"] < times["window_end"]))
    suspended = _periods(lines[tp], suspensions, "start_date", "end_date", inclusive=True)
    debt = _periods(lines, debts, "debt_from", "debt_to", inclusive=False)
    plan_missing = debt["plan_from"].isna() | (debt["plan_from"] > debt["service_date"]) | ~debt["plan_respected"]
    debt = debt[(debt["amount_eur"] >= 50_000) & plan_missing]
    key = ["patient_id", "provider_nihdi", "nomenclature_code", "service_date", "service_time"]
    ordered = lines.sort_values(["effective_submitted_date", "claim_id"])
    flagged = {
        "LATE_ATTESTATION": lines["claim_id"][_late(lines, years)],
        "PSEUDO_TP_NUMBER": lines["claim_id"][
            tp & lines["tp_status"].isin(["missing", "unregistered", "not_valid_on_date"])
        ],
        "TP_NUMBER_NOT_AUTHORIZED": lines["claim_id"][tp & (lines["tp_status"] == "not_authorized")],
        "EVENING_VISIT_MISCODING": pd.concat([lines["claim_id"][outside], _bursts(lines)]),
        "TP_SUSPENDED_BILLING": suspended["claim_id"],
        "DEBT_BLOCKED_BILLING": debt["claim_id"],
        "DUPLICATE_BILLING": ordered["claim_id"][ordered.duplicated(key, keep="first")],
    }
    return {(claim, rule) for rule, claims in flagged.items() for claim in claims}

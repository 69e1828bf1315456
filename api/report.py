"""Annual figures for the administrative control service (SCA) from published runs and cases.

``basis="service"`` (default) counts the flags of the newest complete run whose service date
falls in the year; ``basis="detection"`` counts every flag first detected by a run created in
the year (a flag found again by a later run is not counted twice). Totals and breakdowns count
each flagged line once, however many rules caught it, at the most any rule put at stake on it;
per-rule figures count each rule's flags. Every total is the sum of its breakdowns; a year
without data gives zeros.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl
import sqlalchemy as sa

from api import tables as t
from api.campaigns import campaigns, impact, with_providers
from api.feedback import LATE_RULE
from api.formats import Lang
from api.queries import NO_BACKTEST, rule_backtest
from api.suppression import DEFAULT_MINIMUM, suppress
from api.targets import against_targets
from data_contracts.parsers import INVALID_INSURER, has_exact_digits
from data_contracts.schemas import THIRD_PARTY_CHANNELS
from rules import RuleDeclaration, load_catalog
from rules.context import STAMPED_SHARE

Basis = Literal["service", "detection"]
DIMENSIONS = ("profession", "region", "insurer_code", "channel")
PSEUDO_RULE = "PSEUDO_TP_NUMBER"
# Enriched columns and the input table each comes from, to name a datamatching's sources.
SOURCES = {
    "tp_status": ("third_party_invoices", "third_party_registry"),
    "third_party_number": ("third_party_invoices", "third_party_registry"),
    "tp_authorized_on_date": ("third_party_registry",),
    "effective_submitted_date": ("third_party_invoices",),
    "profession": ("providers",),
    "time_window": ("nomenclature",),
    "code_setting": ("nomenclature",),
    "window_start": ("nomenclature",),
    "code_fee_eur": ("nomenclature",),
}
FLAG_SCHEMA = {
    "claim_id": pl.String,
    "rule_id": pl.String,
    "provider_nihdi": pl.String,
    "amount_at_stake_eur": pl.Float64,
    "service_date": pl.Date,
    "profession": pl.String,
    "region": pl.String,
    "insurer_code": pl.String,
    "channel": pl.String,
    "run_id": pl.String,
}


def _year_bounds(year: int) -> tuple[datetime, datetime]:
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


def _runs(connection: sa.Connection) -> pl.DataFrame:
    rows = connection.execute(
        sa.select(t.runs.c.run_id, t.runs.c.created_at, t.runs.c.published_at, t.runs.c.info)
        .where(t.runs.c.status == "complete")
        .order_by(t.runs.c.published_at)
    ).all()
    return pl.DataFrame(
        [
            {"run_id": r.run_id, "created_at": r.created_at, "published_at": r.published_at, "info": r.info}
            for r in rows
        ],
        schema={"run_id": pl.String, "created_at": pl.Datetime, "published_at": pl.Datetime, "info": pl.Object},
    )


def _flags(connection: sa.Connection, run_ids: list[str], where: Any = None) -> pl.DataFrame:
    if not run_ids:
        return pl.DataFrame(schema=FLAG_SCHEMA)
    query = sa.select(*(t.flags.c[c] for c in FLAG_SCHEMA)).where(t.flags.c.run_id.in_(run_ids))
    if where is not None:
        query = query.where(where)
    rows = connection.execute(query).all()
    return pl.DataFrame([tuple(r) for r in rows], schema=FLAG_SCHEMA, orient="row")


def year_flags(connection: sa.Connection, year: int, basis: Basis) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The flags counted for ``year`` and the runs they come from."""
    runs = _runs(connection)
    if basis == "service":
        chosen = runs.tail(1)
        start, end = datetime(year, 1, 1).date(), datetime(year + 1, 1, 1).date()
        flags = _flags(
            connection,
            chosen["run_id"].to_list(),
            sa.and_(t.flags.c.service_date >= start, t.flags.c.service_date < end),
        )
    else:
        start_at, end_at = _year_bounds(year)
        created = runs.with_columns(pl.col("created_at").dt.replace_time_zone(None))
        before_end = created.filter(pl.col("created_at") < end_at.replace(tzinfo=None))
        every = _flags(connection, before_end["run_id"].to_list())
        order = before_end.select("run_id", "created_at")
        first = every.join(order, on="run_id").sort("created_at").unique(["claim_id", "rule_id"], keep="first")
        flags = first.filter(pl.col("created_at") >= start_at.replace(tzinfo=None)).drop("created_at")
        chosen = created.filter(pl.col("run_id").is_in(flags["run_id"].unique().implode()))
    used = [
        {"run_id": r["run_id"], "created_at": str(r["created_at"]), "info": r["info"]}
        for r in chosen.iter_rows(named=True)
    ]
    return flags, used


def per_line(flags: pl.DataFrame) -> pl.DataFrame:
    """One row per flagged line, however many rules caught it: its provider, dimensions and
    the most any rule put at stake on it, so that a line caught twice counts once."""
    return flags.group_by("claim_id").agg(
        pl.col("provider_nihdi", "service_date", *DIMENSIONS).first(), pl.col("amount_at_stake_eur").max()
    )


def _totals(flags: pl.DataFrame, *keys: str) -> pl.DataFrame:
    return flags.group_by(*keys).agg(
        pl.len().alias("lines_flagged"),
        pl.col("provider_nihdi").n_unique().alias("providers"),
        pl.col("amount_at_stake_eur").sum().round(2).alias("amount_at_stake_eur"),
    )


def _volumes(runs: list[dict[str, Any]], year: int) -> pl.DataFrame:
    rows = [v for r in runs for v in r["info"].get("volumes", []) if v["year"] == year]
    schema = {
        "year": pl.Int64,
        "insurer_code": pl.String,
        "channel": pl.String,
        "lines": pl.Int64,
        "amount_eur": pl.Float64,
    }
    frame = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    return frame.group_by("insurer_code", "channel").agg(pl.col("lines").sum(), pl.col("amount_eur").sum())


def _software(runs: list[dict[str, Any]], year: int) -> list[dict[str, Any]]:
    """Per billing package: evening-coded lines, the share stamped with the typing time, and
    the miscoding flags (the seed asks the SECM to analyse billing software)."""
    rows = [dict(s) for r in runs for s in r["info"].get("software", []) if s["year"] == year]
    if not rows:
        return []
    counts = [c for c in rows[0] if c not in ("year", "software_id", "stamped_share")]
    return (
        pl.DataFrame(rows)
        .group_by("software_id")
        .agg(pl.col(counts).sum())
        .with_columns(STAMPED_SHARE)
        .sort("software_id")
        .to_dicts()
    )


def _data_sources(rule: RuleDeclaration) -> list[str]:
    text = rule.model_dump_json()
    sources = {"billing_lines"}
    for column, tables in SOURCES.items():
        if column in text:
            sources.update(tables)
    for check in rule.checks:
        if getattr(check, "table", None):
            sources.add(check.table)  # type: ignore[union-attr]
    return sorted(sources)


def _rules(flags: pl.DataFrame, billed: float, lang: Lang) -> list[dict[str, Any]]:
    catalog = load_catalog()
    by_rule = {r["rule_id"]: r for r in _totals(flags, "rule_id").iter_rows(named=True)}
    rows = []
    for rule in catalog:
        row = by_rule.get(rule.id, {"lines_flagged": 0, "providers": 0, "amount_at_stake_eur": 0.0})
        amount = float(row["amount_at_stake_eur"])
        rows.append(
            {
                "rule_id": rule.id,
                "title": rule.titles[lang],
                "lines_flagged": int(row["lines_flagged"]),
                "providers": int(row["providers"]),
                "amount_at_stake_eur": round(amount, 2),
                "share_of_billed": round(amount / billed, 6) if billed else 0.0,
            }
        )
    return rows


def _breakdowns(flags: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    return {
        dimension: _totals(flags.with_columns(pl.col(dimension).fill_null("unknown")), dimension)
        .rename({dimension: "value"})
        .sort("amount_at_stake_eur", "value", descending=[True, False])
        .to_dicts()
        for dimension in DIMENSIONS
    }


def _quality(flags: pl.DataFrame, volumes: pl.DataFrame, runs: list[dict[str, Any]], year: int) -> list[dict[str, Any]]:
    pseudo = flags.filter(pl.col("rule_id") == PSEUDO_RULE).group_by("insurer_code").len("pseudo")
    late = flags.filter(pl.col("rule_id") == LATE_RULE).group_by("insurer_code", "channel").len("late")
    third_party = (
        volumes.filter(pl.col("channel").is_in(THIRD_PARTY_CHANNELS))
        .group_by("insurer_code")
        .agg(pl.col("lines").sum().alias("third_party_lines"))
    )
    quarantine: dict[str, dict[str, int]] = {}
    for run in runs:
        info = run["info"]
        # The report year's bad rows; runs published before years were recorded count them all.
        counted = (
            info["quarantine_by_year"].get(str(year), {})
            if "quarantine_by_year" in info
            else info.get("quarantine_by_insurer", {})
        )
        for code, reasons in counted.items():
            # Runs published earlier kept the raw code of quarantined rows as their key.
            insurer = code if has_exact_digits(code, 3) else INVALID_INSURER
            for reason, n in reasons.items():
                quarantine.setdefault(insurer, {}).setdefault(reason, 0)
                quarantine[insurer][reason] += n
    insurers = sorted(set(volumes["insurer_code"]) | set(flags["insurer_code"].drop_nulls()) | set(quarantine))
    result = []
    for insurer in insurers:
        tp_lines = int(third_party.filter(pl.col("insurer_code") == insurer)["third_party_lines"].sum())
        n_pseudo = int(pseudo.filter(pl.col("insurer_code") == insurer)["pseudo"].sum())
        channels = volumes.filter(pl.col("insurer_code") == insurer)
        late_rates = {}
        for channel, lines in channels.select("channel", "lines").sort("channel").iter_rows():
            n_late = int(
                late.filter((pl.col("insurer_code") == insurer) & (pl.col("channel") == channel))["late"].sum()
            )
            late_rates[channel] = {
                "lines": int(lines),
                "late": n_late,
                "rate": round(n_late / lines, 6) if lines else 0.0,
            }
        result.append(
            {
                "insurer_code": insurer,
                "third_party_lines": tp_lines,
                "pseudo_number_lines": n_pseudo,
                "pseudo_number_rate": round(n_pseudo / tp_lines, 6) if tp_lines else 0.0,
                "late_billing_by_channel": late_rates,
                "quarantined_rows_by_reason": dict(sorted(quarantine.get(insurer, {}).items())),
            }
        )
    return result


def _insurer_indicators(
    quality: list[dict[str, Any]], lines: pl.DataFrame, volumes: pl.DataFrame
) -> list[dict[str, Any]]:
    """Per insurer, the indicators the SCA passes to the insurers' control office (art. 37) for
    the evaluation of their management: each with its domain, numerator and denominator, so
    that the Office can recompute the rate, and the same counts as the data-quality table."""
    billed = volumes.group_by("insurer_code").agg(pl.col("lines").sum(), pl.col("amount_eur").sum())
    flagged = lines.group_by("insurer_code").agg(pl.len().alias("lines"), pl.col("amount_at_stake_eur").sum())

    def of(frame: pl.DataFrame, insurer: str, column: str) -> float:
        return float(frame.filter(pl.col("insurer_code") == insurer)[column].sum())

    rows = []
    for q in quality:
        insurer = q["insurer_code"]
        channels = q["late_billing_by_channel"].values()
        lines_billed = int(of(billed, insurer, "lines"))
        for domain, indicator, numerator, denominator in (
            ("data_quality", "pseudo_number_rate", q["pseudo_number_lines"], q["third_party_lines"]),
            ("data_quality", "late_billing_rate", sum(c["late"] for c in channels), sum(c["lines"] for c in channels)),
            (
                "data_quality",
                "quarantine_reasons_per_line",
                sum(q["quarantined_rows_by_reason"].values()),
                lines_billed,
            ),
            ("control", "flagged_line_rate", int(of(flagged, insurer, "lines")), lines_billed),
            (
                "control",
                "amount_at_stake_share",
                round(of(flagged, insurer, "amount_at_stake_eur"), 2),
                round(of(billed, insurer, "amount_eur"), 2),
            ),
        ):
            rows.append(
                {
                    "insurer_code": insurer,
                    "domain": domain,
                    "indicator": indicator,
                    "numerator": numerator,
                    "denominator": denominator,
                    "rate": round(numerator / denominator, 6) if denominator else None,
                }
            )
    return rows


def _anomalies(connection: sa.Connection, runs: list[dict[str, Any]], year: int) -> dict[str, Any]:
    run_ids = [r["run_id"] for r in runs]
    if not run_ids:
        return {"providers_scored": 0, "providers_in_top_decile": 0, "cases_opened_on_top_decile": 0}
    scores = connection.execute(
        sa.select(t.provider_scores.c.provider_nihdi, t.provider_scores.c.score).where(
            t.provider_scores.c.run_id == run_ids[-1], t.provider_scores.c.period == str(year)
        )
    ).all()
    ranked = sorted(scores, key=lambda r: -r.score)
    top = {r.provider_nihdi for r in ranked[: math.ceil(len(ranked) / 10)]}
    start, end = _year_bounds(year)
    opened = (
        connection.execute(
            sa.select(sa.func.count()).where(
                t.cases.c.provider_nihdi.in_(top), t.cases.c.opened_at >= start, t.cases.c.opened_at < end
            )
        ).scalar_one()
        if top
        else 0
    )
    return {"providers_scored": len(ranked), "providers_in_top_decile": len(top), "cases_opened_on_top_decile": opened}


def case_figures(connection: sa.Connection, year: int) -> dict[str, Any]:
    start, end = _year_bounds(year)
    c = t.cases.c

    def count(*where: Any) -> int:
        return int(connection.execute(sa.select(sa.func.count()).select_from(t.cases).where(*where)).scalar_one())

    closed = (c.closed_at >= start, c.closed_at < end)
    recovered = connection.execute(
        sa.select(sa.func.coalesce(sa.func.sum(c.amount_to_recover_eur), 0.0)).where(*closed, c.outcome == "confirmed")
    ).scalar_one()
    a = t.case_actions.c
    taken: dict[str, int] = dict(
        connection.execute(
            sa.select(a.action, sa.func.count())
            .where(a.taken_on >= start.date(), a.taken_on < end.date())
            .group_by(a.action)
        ).all()
    )
    sanctioned = connection.execute(
        sa.select(sa.func.coalesce(sa.func.sum(a.amount_eur), 0.0)).where(
            a.taken_on >= start.date(), a.taken_on < end.date(), a.action == "sanction"
        )
    ).scalar_one()
    r = t.case_recoveries.c
    received = (r.received_on >= start.date(), r.received_on < end.date())
    recovered_on, recovered_eur = connection.execute(
        sa.select(sa.func.count(sa.distinct(r.case_id)), sa.func.coalesce(sa.func.sum(r.amount_eur), 0.0)).where(
            *received
        )
    ).one()
    return {
        "opened": count(c.opened_at >= start, c.opened_at < end),
        "closed": count(*closed),
        "confirmed": count(*closed, c.outcome == "confirmed"),
        "unfounded": count(*closed, c.outcome == "unfounded"),
        "amount_to_recover_eur": round(float(recovered), 2),
        # Money received in the year, on cases of any year.
        "cases_recovered_on": int(recovered_on),
        "amount_recovered_eur": round(float(recovered_eur), 2),
        # The graduated response: steps taken on cases in the year, and the sanctions' amount.
        **{f"{action}s": int(taken.get(action, 0)) for action in t.LADDER},
        "sanctions_eur": round(float(sanctioned), 2),
    }


def sensitisation(connection: sa.Connection, year: int) -> list[dict[str, Any]]:
    """The campaigns created in ``year``: criteria, providers per arm, and the effect measured
    in the newest run (none while no later period is published)."""
    start, end = _year_bounds(year)
    rows = []
    for listed in campaigns(connection, t.campaigns.c.created_at >= start, t.campaigns.c.created_at < end):
        found = with_providers(connection, listed)
        measured = impact(connection, found)
        overall = measured["groups"][0] if measured["status"] == "measured" else {}
        rows.append(
            {
                "name": found["name"],
                "rule_id": found["rule_id"],
                "period": found["period"],
                "created_at": found["created_at"],
                "contacted": found["contacted"],
                "comparison": found["comparison"],
                "effect": overall.get("effect"),
                "ci_low": overall.get("ci_low"),
                "ci_high": overall.get("ci_high"),
            }
        )
    return rows


def _datamatchings(
    connection: sa.Connection, runs: list[dict[str, Any]], flags: pl.DataFrame, checked: int, year: int, lang: Lang
) -> list[dict[str, Any]]:
    """Each rule as a datamatching (2021 amendment, art. 36): legal basis, the tables it
    matches and the runs counted; the year's billing lines it checked, the lines and providers
    it hit; and the cases opened in the year on those providers, with their outcomes, the
    amounts to recover and what has been recovered on them so far."""
    run_dates = sorted({r["created_at"][:10] for r in runs})
    start, end = _year_bounds(year)
    c = t.cases.c
    r = t.case_recoveries.c
    recovered = sa.select(sa.func.coalesce(sa.func.sum(r.amount_eur), 0.0)).where(r.case_id == c.id).scalar_subquery()
    cases = pl.DataFrame(
        connection.execute(
            sa.select(c.provider_nihdi, c.outcome, c.amount_to_recover_eur, recovered).where(
                c.opened_at >= start, c.opened_at < end
            )
        ).all(),
        schema={
            "provider_nihdi": pl.String,
            "outcome": pl.String,
            "amount_to_recover_eur": pl.Float64,
            "amount_recovered_eur": pl.Float64,
        },
        orient="row",
    )
    hit = flags.select("rule_id", "provider_nihdi").unique()
    on_hit = (
        cases.join(hit, on="provider_nihdi")
        .group_by("rule_id")
        .agg(
            pl.len().alias("cases_opened"),
            (pl.col("outcome") == "confirmed").sum().alias("confirmed"),
            (pl.col("outcome") == "unfounded").sum().alias("unfounded"),
            *(
                pl.col(amount).filter(pl.col("outcome") == "confirmed").sum().alias(amount)
                for amount in ("amount_to_recover_eur", "amount_recovered_eur")
            ),
        )
    )
    figures = {r["rule_id"]: r for r in on_hit.iter_rows(named=True)}
    lines = {r["rule_id"]: r for r in _totals(flags, "rule_id").iter_rows(named=True)}
    rows = []
    for rule in load_catalog():
        found, cases_of = lines.get(rule.id, {}), figures.get(rule.id, {})
        rows.append(
            {
                "rule_id": rule.id,
                "title": rule.titles[lang],
                "legal_basis": rule.legal_basis,
                "data_sources": _data_sources(rule),
                "run_dates": run_dates,
                "records_checked": checked,
                "lines_hit": int(found.get("lines_flagged", 0)),
                "providers_hit": int(found.get("providers", 0)),
                "cases_opened": int(cases_of.get("cases_opened", 0)),
                "confirmed": int(cases_of.get("confirmed", 0)),
                "unfounded": int(cases_of.get("unfounded", 0)),
                "amount_to_recover_eur": round(float(cases_of.get("amount_to_recover_eur", 0.0)), 2),
                "amount_recovered_eur": round(float(cases_of.get("amount_recovered_eur", 0.0)), 2),
            }
        )
    return rows


def annual_report(
    connection: sa.Connection,
    year: int,
    basis: Basis = "service",
    minimum_cell: int = DEFAULT_MINIMUM,
    lang: Lang = "en",
    targets: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Every figure of the SCA's annual report for ``year``, with the rules' titles in
    ``lang``, its cells of fewer than ``minimum_cell`` suppressed (0: none, for internal
    use only), and its actuals against ``targets`` (:mod:`api.targets`)."""
    flags, runs = year_flags(connection, year, basis)
    lines = per_line(flags)
    volumes = _volumes(runs, year)
    billed = float(volumes["amount_eur"].sum())
    rules = _rules(flags, billed, lang)
    start, end = _year_bounds(year)
    backtest = rule_backtest(connection, t.cases.c.closed_at >= start, t.cases.c.closed_at < end)
    for rule in rules:
        rule |= backtest.get(rule["rule_id"], NO_BACKTEST)
    previous_flags, _ = year_flags(connection, year - 1, basis)
    previous = {r["rule_id"]: r for r in _rules(previous_flags, 0.0, lang)}
    change = [
        {
            "rule_id": r["rule_id"],
            "lines_flagged": r["lines_flagged"] - previous[r["rule_id"]]["lines_flagged"],
            "amount_at_stake_eur": round(r["amount_at_stake_eur"] - previous[r["rule_id"]]["amount_at_stake_eur"], 2),
            "previous_lines_flagged": previous[r["rule_id"]]["lines_flagged"],
            "previous_amount_at_stake_eur": previous[r["rule_id"]]["amount_at_stake_eur"],
        }
        for r in rules
    ]
    quality = _quality(flags, volumes, runs, year)
    report = {
        "year": year,
        "basis": basis,
        "lang": lang,
        "runs": [{"run_id": r["run_id"], "created_at": r["created_at"]} for r in runs],
        "billed_amount_eur": round(billed, 2),
        # Lines counted once however many rules caught them; the rules' own figures beside.
        "totals": {
            "lines_flagged": lines.height,
            "providers": lines["provider_nihdi"].n_unique(),
            "amount_at_stake_eur": round(float(lines["amount_at_stake_eur"].sum()), 2),
            "flags": flags.height,
        },
        "rules": rules,
        "breakdowns": _breakdowns(lines),
        "data_quality": quality,
        "insurer_indicators": _insurer_indicators(quality, lines, volumes),
        "software": _software(runs, year),
        "anomaly_detection": _anomalies(connection, runs, year),
        "cases": case_figures(connection, year),
        "sensitisation": sensitisation(connection, year),
        "year_over_year": change,
        "datamatchings": _datamatchings(connection, runs, flags, int(volumes["lines"].sum()), year, lang),
    }
    published = suppress(report, minimum_cell)
    published["targets"] = against_targets(published, targets or {})
    return published

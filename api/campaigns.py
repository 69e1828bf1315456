"""Sensitisation campaigns: a letter to the providers a rule keeps catching, and its measured effect.

The 2021 amendment (art. 42, part 1) commits the SECM to write to providers who systematically
bill late, and to measure the effect before continuing. So a campaign records whom it selected
and how, and splits them into two arms that can be compared:

- **Selection.** In the newest run (or a chosen one) and a period (default its latest), each
  provider's share of lines flagged by the rule, over their lines in that channel when one is
  named; those with at least ``min_share`` and ``min_lines`` are selected.
- **Matched pairs.** The selected are sorted by profession, region and share and paired with
  their neighbour; in each pair a coin, seeded by the campaign's name, picks who is contacted.
  The other is the comparison: alike in what was measured, not contacted (until the effect is
  known). Randomising within pairs keeps regression to the mean out of the estimate: both arms
  were selected for the same high share.
- **Impact.** In a later run, each provider's share after the campaign's period minus their
  share in it; the effect is the contacted arm's mean change minus the comparison arm's
  (difference in differences), with a 95 % Welch interval, overall and per profession.

Letters go to the contacted arm only, one per provider in their language, with their own figures.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa

from api import documents, feedback
from api import tables as t
from api.formats import Lang
from api.queries import published_run
from detectors.profiles import CHANNEL_LINES, Period, period_expr
from rules import load_catalog

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
CONFIDENCE = 0.95


class CampaignError(ValueError):
    """A campaign that cannot be created or measured as asked; the message says why."""


def measure(
    connection: sa.Connection, run: str, rule_id: str, channel: str | None, periods: list[str] | None = None
) -> pl.DataFrame:
    """Per provider and period of ``run``: profession, region, ``lines`` (in ``channel`` if
    given) and ``flagged`` (of those, flagged by the rule)."""
    ps, f = t.provider_scores.c, t.flags.c
    query = sa.select(ps.provider_nihdi, ps.period, ps.profile).where(ps.run_id == run)
    if periods:
        query = query.where(ps.period.in_(periods))
    column = CHANNEL_LINES[channel] if channel else "lines"
    fields = pl.Struct({"profession": pl.String, "region": pl.String, column: pl.Float64})
    profiles = (
        pl.DataFrame(
            connection.execute(query).all(),
            schema={"provider_nihdi": pl.String, "period": pl.String, "profile": pl.String},
            orient="row",
        )
        .with_columns(pl.col("profile").str.json_decode(fields))
        .unnest("profile")
        .rename({column: "lines"} if column != "lines" else {})
        .with_columns(pl.col("lines").fill_null(0).cast(pl.Int64))
    )
    flagged = sa.select(f.provider_nihdi, f.service_date).where(f.run_id == run, f.rule_id == rule_id)
    if channel:
        flagged = flagged.where(f.channel == channel)
    grain: Period = "quarter" if profiles["period"].str.contains("Q").any() else "year"
    counted = (
        pl.DataFrame(
            connection.execute(flagged).all(),
            schema={"provider_nihdi": pl.String, "service_date": pl.Date},
            orient="row",
        )
        .with_columns(period_expr(grain))
        .group_by("provider_nihdi", "period")
        .agg(pl.len().alias("flagged"))
    )
    return profiles.join(counted, on=["provider_nihdi", "period"], how="left").with_columns(
        pl.col("flagged").fill_null(0).cast(pl.Int64)
    )


def _share() -> pl.Expr:
    return pl.when(pl.col("lines") > 0).then(pl.col("flagged") / pl.col("lines")).otherwise(0.0)


def _pairs(selected: pl.DataFrame, name: str) -> pl.DataFrame:
    """``selected`` with ``pair`` and ``arm``: neighbours by profession, region and share are
    paired, and a coin seeded by ``name`` picks the contacted one; an odd one out is contacted."""
    ranked = selected.sort(
        "profession", "region", "share", "provider_nihdi", descending=[False, False, True, False], nulls_last=True
    ).with_columns((pl.int_range(pl.len()).over("profession") // 2).alias("_within"))
    starts = pl.col("profession").ne_missing(pl.col("profession").shift(1)) | (
        pl.col("_within") != pl.col("_within").shift(1)
    )
    ranked = ranked.with_columns((starts.fill_null(True).cum_sum() - 1).cast(pl.Int64).alias("pair"))
    ranked = ranked.with_columns(
        pl.int_range(pl.len()).over("pair").alias("_seat"), pl.len().over("pair").alias("_size")
    )
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    coins = np.random.default_rng(seed).integers(0, 2, ranked.height)[ranked["pair"].to_numpy()]
    contacted = (pl.col("_size") == 1) | (pl.col("_seat") == pl.Series(coins))
    return ranked.with_columns(
        pl.when(contacted).then(pl.lit("contacted")).otherwise(pl.lit("comparison")).alias("arm")
    ).drop("_within", "_seat", "_size")


def create_campaign(
    connection: sa.Connection,
    *,
    name: str,
    rule_id: str,
    created_by: str,
    profession: str | None = None,
    channel: str | None = None,
    min_share: float = 0.1,
    min_lines: int = 20,
    period: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Select, pair and record a campaign (in the caller's transaction); its summary."""
    if not re.match(NAME_PATTERN, name):
        raise CampaignError(f"A campaign name is letters, digits, '.', '_' or '-' (at most 128), not {name!r}")
    load_catalog().rule(rule_id)  # an unknown rule is a clear error
    if channel is not None and channel not in CHANNEL_LINES:
        raise CampaignError(f"Unknown channel {channel!r}; channels: {', '.join(CHANNEL_LINES)}")
    if connection.execute(sa.select(t.campaigns.c.id).where(t.campaigns.c.name == name)).first():
        raise CampaignError(f"A campaign named {name!r} exists already")
    run = published_run(connection, run_id)
    ps = t.provider_scores.c
    chosen = period or connection.execute(sa.select(sa.func.max(ps.period)).where(ps.run_id == run)).scalar()
    measured = measure(connection, run, rule_id, channel, [chosen] if chosen else None)
    if measured.is_empty():
        raise CampaignError(f"Run {run} has no profiles for period {chosen}")
    if profession:
        measured = measured.filter(pl.col("profession") == profession)
    measured = measured.with_columns(_share().alias("share"))
    selected = measured.filter((pl.col("lines") >= min_lines) & (pl.col("share") >= min_share))
    if selected.height < 2:
        raise CampaignError(
            f"{selected.height} provider(s) meet the criteria in {chosen}; a campaign needs at least 2 "
            "(one contacted, one kept for comparison)"
        )
    paired = _pairs(selected, name)
    criteria = {
        "profession": profession,
        "channel": channel,
        "min_share": min_share,
        "min_lines": min_lines,
        # What the selected are compared with in their letter: the median share of their profession.
        "profession_median_share": {
            k: float(v)
            for k, v in measured.filter(pl.col("lines") >= 1)
            .group_by("profession")
            .agg(pl.col("share").median())
            .drop_nulls("profession")
            .iter_rows()
        },
    }
    campaign_id = connection.execute(
        sa.insert(t.campaigns).returning(t.campaigns.c.id),
        {
            "name": name,
            "rule_id": rule_id,
            "run_id": run,
            "period": chosen,
            "criteria": criteria,
            "created_by": created_by,
            "created_at": datetime.now(UTC),
        },
    ).scalar_one()
    rows = paired.select(
        pl.lit(campaign_id).alias("campaign_id"),
        "provider_nihdi",
        "arm",
        "pair",
        "profession",
        "region",
        pl.col("region").replace_strict(documents.REGION_LANGUAGE, default="en").alias("language"),
        "lines",
        "flagged",
    ).to_dicts()
    connection.execute(sa.insert(t.campaign_providers), rows)
    return campaign(connection, name)


def campaigns(connection: sa.Connection, *where: Any) -> list[dict[str, Any]]:
    """The campaigns matching ``where`` (every one without), newest first, with how many
    providers each arm holds."""
    c, cp = t.campaigns.c, t.campaign_providers.c
    arms = (
        sa.select(
            cp.campaign_id,
            sa.func.sum(sa.case((cp.arm == "contacted", 1), else_=0)).label("contacted"),
            sa.func.sum(sa.case((cp.arm == "comparison", 1), else_=0)).label("comparison"),
        )
        .group_by(cp.campaign_id)
        .subquery()
    )
    query = (
        sa.select(
            c.name,
            c.rule_id,
            c.run_id,
            t.runs.c.legislation,
            c.period,
            c.criteria,
            c.created_by,
            c.created_at,
            arms.c.contacted,
            arms.c.comparison,
        )
        .join(arms, arms.c.campaign_id == c.id)
        .join(t.runs, t.runs.c.run_id == c.run_id)
        .where(*where)
        .order_by(c.created_at.desc(), c.id.desc())
    )
    return [_public(r) for r in t.records(connection.execute(query))]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": row["created_at"].isoformat()}


def campaign(connection: sa.Connection, name: str) -> dict[str, Any]:
    """A campaign with its criteria and its providers (arm, pair, measured lines and flags)."""
    found = next(iter(campaigns(connection, t.campaigns.c.name == name)), None)
    if found is None:
        raise CampaignError(f"No campaign named {name!r}")
    return with_providers(connection, found)


def with_providers(connection: sa.Connection, listed: dict[str, Any]) -> dict[str, Any]:
    """A campaign as :func:`campaigns` lists it, with its providers."""
    c, cp = t.campaigns.c, t.campaign_providers.c
    members = t.records(
        connection.execute(
            sa.select(cp.provider_nihdi, cp.arm, cp.pair, cp.profession, cp.region, cp.language, cp.lines, cp.flagged)
            .join(t.campaigns, c.id == cp.campaign_id)
            .where(c.name == listed["name"])
            .order_by(cp.pair, cp.arm.desc())
        )
    )
    return {**listed, "providers": members}


def impact(connection: sa.Connection, found: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    """The effect of a campaign (as :func:`campaign` gives it) in ``run_id`` (default: the
    newest run): difference in differences of the targeted share, contacted against
    comparison, overall and per profession."""
    run = published_run(connection, run_id)
    members = pl.DataFrame(found["providers"]).select("provider_nihdi", "arm", "profession", "lines", "flagged")
    measured = measure(connection, run, found["rule_id"], found["criteria"]["channel"]).join(
        members.select("provider_nihdi", "arm"), on="provider_nihdi"
    )
    later = measured.filter(pl.col("period") > found["period"])
    if later.is_empty():
        return {"run_id": run, "status": "waiting", "message": f"Run {run} has no period after {found['period']} yet"}
    # Before: the campaign's period in this run when it has it, else as measured at selection.
    before = members.join(
        measured.filter(pl.col("period") == found["period"]).select("provider_nihdi", "lines", "flagged"),
        on="provider_nihdi",
        how="left",
        suffix="_now",
    ).select(
        "provider_nihdi",
        "arm",
        "profession",
        pl.coalesce("lines_now", "lines").alias("lines"),
        pl.coalesce("flagged_now", "flagged").alias("flagged"),
    )
    after = later.group_by("provider_nihdi").agg(pl.col("lines", "flagged").sum()).filter(pl.col("lines") > 0)
    changes = before.with_columns(_share().alias("before")).join(
        after.select("provider_nihdi", _share().alias("after")), on="provider_nihdi"
    )
    changes = changes.with_columns((pl.col("after") - pl.col("before")).alias("change"))
    groups = [_effect(changes, "all")] + [
        _effect(part, str(key[0])) for key, part in changes.group_by("profession", maintain_order=True)
    ]
    return {
        "run_id": run,
        "status": "measured",
        "after_periods": sorted(later["period"].unique().to_list()),
        "channel": found["criteria"]["channel"] or "all",
        "without_later_lines": members.height - changes.height,
        "groups": groups,
    }


def _effect(changes: pl.DataFrame, profession: str) -> dict[str, Any]:
    """The difference in differences of one group, with its Welch interval when each arm has two."""
    arms = {arm: changes.filter(pl.col("arm") == arm) for arm in ("contacted", "comparison")}
    out: dict[str, Any] = {"profession": profession}
    for arm, rows in arms.items():
        out[arm] = rows.height
        out[f"{arm}_before"] = rows["before"].mean()
        out[f"{arm}_after"] = rows["after"].mean()
    a, b = arms["contacted"]["change"].to_numpy(), arms["comparison"]["change"].to_numpy()
    out["effect"] = float(a.mean() - b.mean()) if len(a) and len(b) else None
    out["ci_low"] = out["ci_high"] = None
    if len(a) >= 2 and len(b) >= 2 and (a.std() > 0 or b.std() > 0):
        from scipy import stats  # type: ignore[import-untyped]  # a second of start-up, for this alone

        interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(CONFIDENCE)
        out["ci_low"], out["ci_high"] = float(interval.low), float(interval.high)
    return out


def write_letters(connection: sa.Connection, name: str, folder: Path) -> list[Path]:
    """One letter per contacted provider, in their language, into ``folder``."""
    found = campaign(connection, name)
    rule = load_catalog().rule(found["rule_id"])
    channel: str | None = found["criteria"]["channel"]
    folder.mkdir(parents=True, exist_ok=True)
    contacted = [m for m in found["providers"] if m["arm"] == "contacted"]
    # The channel's deadline depends on the profession only: read once per profession.
    deadline_of = {
        profession: feedback.deadlines(profession, found["legislation"]).get(channel)
        if channel and rule.id == feedback.LATE_RULE
        else None
        for profession in {m["profession"] for m in contacted}
    }
    written = []
    for member in contacted:
        lang: Lang = member["language"]
        deadline = deadline_of[member["profession"]]
        share = member["flagged"] / member["lines"] if member["lines"] else 0.0
        page = documents.render(
            "letter.html",
            lang,
            campaign=found,
            member={**member, "share": share},
            title=rule.titles[lang],
            why=rule.why[lang] if rule.why else "",
            legal_basis=rule.legal_basis,
            channel=channel,
            deadline=deadline,
            peer_share=found["criteria"]["profession_median_share"].get(member["profession"]),
        )
        path = folder / f"{member['provider_nihdi']}.html"
        path.write_text(page, encoding="utf-8")
        written.append(path)
    return written

"""A model card for every registered model: what it was trained on, what it uses, how well it
did on periods it had not seen, where it is uneven, and what it cannot do.

The card is written when the model is trained and logged with it in MLflow
(``model_card.json``); who approved it and when is added from the model version's tags when
the card is served, since approval comes later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from detectors import evidence
from detectors.fairness import fairness_report
from detectors.peers import DEFAULT_MIN_PEERS, DEFAULT_PEER_COLUMNS
from detectors.profiles import FEATURES, ID
from detectors.scoring import Model, fit_profiles, score_profiles

ARTIFACT = "model_card.json"
INTENDED_USE = (
    "Ranks provider billing profiles by how far they exceed comparable providers, so that "
    "inspectors of the SECM choose which providers to look at first. A score is a lead, never "
    "a finding: only the rules, with their legal basis, and an inspector's investigation establish "
    "an irregularity."
)
LIMITS = (
    "Legitimately atypical practices (night duty, nursing homes, rural rounds) bill like "
    "overbilling on some features; the patients table corrects for patient mix only, and closed "
    "cases marked unfounded teach the rest.",
    "Excessive volume (lines per patient) is the hardest anomaly to see: ordinary practices "
    "already differ more than two-fold.",
    "Small practices are judged with their counts' noise: a subtle anomaly in a practice of a "
    "few dozen patients a year stays out of reach.",
    "Peers are compared within a period; a provider's first or only period has no history to show persistence.",
)
TWO_SIDED = (
    "Two-sided: a provider billing less than their peers scores like one billing more, "
    "though only more can mean overbilling."
)
QUANTILES = (0.5, 0.9, 0.99)


def _quantiles(scores: pl.DataFrame) -> dict[str, float]:
    return {f"p{round(q * 100)}": round(float(scores["score"].quantile(q) or 0.0), 3) for q in QUANTILES}


def temporal_holdout(
    profiles: pl.DataFrame,
    detector: str,
    *,
    labels: pl.DataFrame | None = None,
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
    random_state: int = 0,
    verdicts: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """The detector refitted on every period but the last and evaluated on the last one:
    against the labelled providers when there are any, and always by its score quantiles on
    both sides (a calibrated score keeps them)."""
    from detectors.tracking import quality

    periods = sorted(profiles["period"].unique().to_list())
    if len(periods) < 2:
        return {"status": f"not evaluated: one period only ({', '.join(periods) or 'none'})"}
    earlier = profiles.filter(pl.col("period") != periods[-1])
    later = profiles.filter(pl.col("period") == periods[-1])
    model = fit_profiles(
        earlier, detector, peer_columns=peer_columns, min_peers=min_peers, random_state=random_state, verdicts=verdicts
    )
    held = score_profiles(model, later)
    result: dict[str, Any] = {
        "status": "evaluated",
        "trained_on": periods[:-1],
        "evaluated_on": periods[-1],
        "score_quantiles_trained_on": _quantiles(score_profiles(model, earlier)),
        "score_quantiles_evaluated_on": _quantiles(held),
    }
    if labels is not None:
        anomalous = labels.select(ID).unique().join(later.select(ID).unique(), on=ID)
        metrics = quality(held, anomalous, anomalous.height) if anomalous.height else {}
        result["labelled_providers"] = anomalous.height
        result["metrics"] = {name: round(value, 3) for name, value in metrics.items()}
    return result


def model_card(
    model: Model,
    profiles: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    version: str,
    run_id: str,
    holdout: dict[str, Any],
    metrics: dict[str, float],
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
    attributes: pl.DataFrame | None = None,
    labels_source: str | None = None,
    verdicts: int = 0,
) -> dict[str, Any]:
    """The card of ``model`` (registered as ``version`` by MLflow run ``run_id``), fitted on
    ``profiles`` whose scores are ``scores``."""
    periods = sorted(profiles["period"].unique().to_list())
    fairness = fairness_report(scores, profiles, attributes)
    names = list(model.feature_names_)
    small = scores.filter(pl.col("peer_group_size") < min_peers).height
    limits = [*LIMITS] if model.name == evidence.NAME else [TWO_SIDED, *LIMITS]
    if small:
        limits.append(
            f"{small} of {scores.height} profiles had fewer than {min_peers} peers in their own group "
            "and were compared with a wider one."
        )
    if fairness["disparities"]:
        limits.append(
            "Large disparities between groups (see fairness): "
            + "; ".join(f"{d['dimension']} {d['group']}: {d['measure']} {d['value']}" for d in fairness["disparities"])
        )
    return {
        "model": model.name,
        "version": version,
        "run_id": run_id,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "intended_use": INTENDED_USE,
        "data": {
            "first_period": periods[0] if periods else None,
            "last_period": periods[-1] if periods else None,
            "periods": periods,
            "profiles": profiles.height,
            "providers": profiles[ID].n_unique(),
            "professions": dict(profiles["profession"].value_counts(sort=True).iter_rows()),
            "labels": labels_source,
            "verdicts": verdicts,
        },
        "features": [{"name": f, "label": FEATURES.get(f, f)} for f in names],
        "peer_grouping": {
            "columns": list(peer_columns),
            "min_peers": min_peers,
            "fallback": "a group smaller than min_peers falls back to a wider one, down to the profession",
        },
        "evaluation": {"training_profiles": {k: round(v, 3) for k, v in metrics.items()}, "temporal_holdout": holdout},
        "fairness": fairness,
        "known_limits": limits,
    }

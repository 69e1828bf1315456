"""Training runs in MLflow: parameters, metrics against labels, plots, the model, the champion.

The tracking store is a SQLite file under ``SECM_HOME`` unless ``MLFLOW_TRACKING_URI`` names
another; artifacts of the embedded store live under ``SECM_HOME/mlartifacts``. Every model is
registered as ``MODEL_NAME``; the one scoring runs use carries the alias ``champion``.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.sklearn
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from mlflow import MlflowClient
from sklearn.metrics import average_precision_score, roc_auc_score

from detectors.evidence import PeerEvidence
from detectors.model_card import ARTIFACT as CARD
from detectors.model_card import model_card, temporal_holdout
from detectors.peers import DEFAULT_MIN_PEERS, DEFAULT_PEER_COLUMNS
from detectors.profiles import FEATURES, ID
from detectors.scoring import DETECTORS, Model, fit_profiles, score_profiles
from secm.settings import Settings, get_settings

MODEL_NAME = "secm-provider-anomaly"
EXPERIMENT = "secm-provider-profiles"
CHAMPION = "champion"
METRICS = ("roc_auc", "average_precision", "precision_at_k")


@dataclass(frozen=True)
class TrainingRun:
    detector: str
    run_id: str
    version: str
    metrics: dict[str, float]


def connect(settings: Settings | None = None) -> str:
    """Point MLflow at the configured store; the experiment's id."""
    settings = settings or get_settings()
    mlflow.set_tracking_uri(settings.effective_mlflow_uri)
    mlflow.set_registry_uri(settings.effective_mlflow_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None if settings.mlflow_tracking_uri else (settings.resolved_home / "mlartifacts").as_uri()
    return mlflow.create_experiment(EXPERIMENT, artifact_location=location)


def _requirements() -> list[str]:
    """What loading the model needs, stated rather than inferred (inference takes seconds)."""
    return [f"{name}=={version(name)}" for name in ("pyod", "scikit-learn", "numpy", "polars", "mlflow")]


def fingerprint(profiles: pl.DataFrame) -> str:
    """A short hash of the training profiles, to tie a model to its data."""
    content = profiles.sort(ID, "period").write_csv().encode()
    return hashlib.sha256(content).hexdigest()[:16]


def quality(scores: pl.DataFrame, labels: pl.DataFrame, k: int) -> dict[str, float]:
    """ROC-AUC, average precision and precision@k of ``scores`` against labelled providers."""
    truth = scores.join(labels.select(ID).unique().with_columns(pl.lit(True).alias("_y")), on=ID, how="left")
    y = truth["_y"].fill_null(False).to_numpy()
    score = truth["score"].to_numpy()
    if y.all() or not y.any():
        return {}
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "average_precision": float(average_precision_score(y, score)),
        "precision_at_k": precision_at_k(y, score, k),
    }


def precision_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """The share of labelled providers (``y``) among the ``k`` best scores.

    Providers tied with the k-th score share the places left among them: each counts with
    the share of labelled providers in the tie, the precision expected over every order of
    the tie. Taking them in the order they came would make the figure depend on the order
    of the rows. A missing score counts below every other.
    """
    score = np.where(np.isnan(score), -np.inf, score)
    k = min(k, score.size)
    kth = np.sort(score)[::-1][k - 1]
    above, tied = score > kth, score == kth
    return float((y[above].sum() + (k - above.sum()) * y[tied].mean()) / k)


LABELLED_SHARES = (0.01, 0.05, 0.2)


def _provider_scores(model: Model, profiles: pl.DataFrame) -> pl.DataFrame:
    """One score per provider: its mean over periods (a lead that persists counts more)."""
    return score_profiles(model, profiles).group_by(ID).agg(pl.col("score").mean()).sort(ID)


def verdict_lift(
    profiles: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    shares: Sequence[float] = LABELLED_SHARES,
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
    seed: int = 0,
) -> dict[str, float]:
    """What verdicts on a share of providers add, measured on providers they did not touch.

    Providers are split in two halves at random. In the first, a share of all providers is
    investigated as inspectors would: half from the top of the unsupervised worklist, half at
    random; labelled ones are ``confirmed``, the others ``unfounded``. The guided detector and
    the unsupervised one are then compared on the second half (precision at k = its labelled
    providers, and average precision).
    """
    unsupervised = fit_profiles(profiles, "peer_evidence", peer_columns=peer_columns, min_peers=min_peers)
    base = _provider_scores(unsupervised, profiles)
    rng = np.random.default_rng(seed)
    half = rng.random(base.height) < 0.5
    taught = base.filter(pl.Series(half)).sort("score", descending=True)
    tested = base.filter(~pl.Series(half))[ID]
    truth = labels.select(ID).unique().with_columns(pl.lit(True).alias("confirmed"))
    on_test = pl.col(ID).is_in(tested.implode())
    k = labels.filter(on_test)[ID].n_unique()
    plain = quality(base.filter(on_test), labels, k)
    metrics: dict[str, float] = {}
    for share in shares:
        n = min(taught.height, max(2, round(share * base.height)))
        top = taught.head(n // 2)[ID].to_list()
        others = taught[ID].to_numpy()[n // 2 :]
        picked = [*top, *rng.choice(others, size=min(others.size, n - n // 2), replace=False).tolist()]
        verdicts = (
            pl.DataFrame({ID: picked}).join(truth, on=ID, how="left").with_columns(pl.col("confirmed").fill_null(False))
        )
        guided = fit_profiles(
            profiles, "peer_evidence", peer_columns=peer_columns, min_peers=min_peers, verdicts=verdicts
        )
        found = quality(_provider_scores(guided, profiles).filter(on_test), labels, k)
        tag = f"{round(share * 100)}pct"
        for metric in ("precision_at_k", "average_precision"):
            metrics[f"{metric}_unsupervised_{tag}"] = plain.get(metric, float("nan"))
            metrics[f"{metric}_guided_{tag}"] = found.get(metric, float("nan"))
            metrics[f"lift_{metric}_{tag}"] = (
                metrics[f"{metric}_guided_{tag}"] - metrics[f"{metric}_unsupervised_{tag}"]
            )
        metrics[f"verdicts_used_{tag}"] = float(getattr(guided, "weights_", None) is not None)
    return metrics


def _plots(scores: pl.DataFrame, model: Model, folder: Path) -> list[Path]:
    distribution = folder / "score_distribution.png"
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    axis.hist(scores["score"].to_numpy(), bins=50, color="#3b6ea5")
    axis.set(title=f"Scores of {scores.height} provider profiles ({model.name})", xlabel="score", ylabel="profiles")
    figure.tight_layout()
    figure.savefig(distribution, dpi=100)
    contributions = folder / "feature_contributions.png"
    item = pl.Struct({"feature": pl.String})
    top = scores.head(max(1, scores.height // 10)).select(
        pl.col("contributions").str.json_decode(pl.List(item)).alias("c")
    )
    counts = top.explode("c").select(pl.col("c").struct.field("feature")).to_series().value_counts(sort=True)
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    axis.barh([FEATURES.get(f, f) for f in counts["feature"]][::-1], counts["count"].to_list()[::-1], color="#a53b3b")
    axis.set(title="Features explaining the top decile", xlabel="times among the top 3")
    figure.tight_layout()
    figure.savefig(contributions, dpi=100)
    return [distribution, contributions]


def train_zoo(
    profiles: pl.DataFrame,
    *,
    labels: pl.DataFrame | None = None,
    detectors: Sequence[str] = DETECTORS,
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
    period: str = "year",
    k: int = 50,
    random_state: int = 0,
    settings: Settings | None = None,
    on_detector: Callable[[str], None] | None = None,
    verdicts: pl.DataFrame | None = None,
    attributes: pl.DataFrame | None = None,
    labels_source: str | None = None,
) -> list[TrainingRun]:
    """Fit, score, log and register every detector, each with its model card; one MLflow run each.

    ``verdicts`` (closed cases: ``provider_nihdi``, ``confirmed``) guide the default detector;
    with ``labels``, its run also logs the lift verdicts give at 1, 5 and 20 % of providers.
    ``attributes`` (:func:`detectors.fairness.provider_attributes`) give the card's fairness
    report the insurer and postcode; ``labels_source`` says where ``labels`` came from.
    """
    experiment = connect(settings)
    data = fingerprint(profiles)
    client = MlflowClient()
    runs = []
    for name in detectors:
        if on_detector:
            on_detector(name)
        with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
            model = fit_profiles(
                profiles,
                name,
                peer_columns=peer_columns,
                min_peers=min_peers,
                random_state=random_state,
                verdicts=verdicts,
            )
            scores = score_profiles(model, profiles)
            params: dict[str, Any] = {
                "detector": name,
                "members": ",".join(model.members) if name == "ensemble" else name,
                "hyper_parameters": str(model.params or "pyod defaults"),
                "random_state": random_state,
                "features": ",".join(model.feature_names_),
                "peer_columns": ",".join(peer_columns),
                "min_peers": min_peers,
                "period": period,
                "profiles": profiles.height,
                "data_fingerprint": data,
            }
            mlflow.log_params(params)
            metrics = quality(scores, labels, k) if labels is not None else {}
            if metrics:
                mlflow.log_metrics(metrics)
            if isinstance(model, PeerEvidence):
                mlflow.log_params({"verdicts": model.verdicts_, "guided": model.weights_ is not None})
                if labels is not None:
                    mlflow.log_metrics(
                        verdict_lift(
                            profiles, labels, peer_columns=peer_columns, min_peers=min_peers, seed=random_state
                        )
                    )
            with tempfile.TemporaryDirectory() as tmp:
                for plot in _plots(scores, model, Path(tmp)):
                    mlflow.log_artifact(str(plot), artifact_path="plots")
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="cloudpickle",
                registered_model_name=MODEL_NAME,
                pip_requirements=_requirements(),
            )
            version = str(info.registered_model_version)
            client.set_model_version_tag(MODEL_NAME, version, "detector", name)
            holdout = temporal_holdout(
                profiles,
                name,
                labels=labels,
                peer_columns=peer_columns,
                min_peers=min_peers,
                random_state=random_state,
                verdicts=verdicts,
            )
            card = model_card(
                model,
                profiles,
                scores,
                version=version,
                run_id=run.info.run_id,
                holdout=holdout,
                metrics=metrics,
                peer_columns=peer_columns,
                min_peers=min_peers,
                attributes=attributes,
                labels_source=labels_source if labels is not None else None,
                verdicts=getattr(model, "verdicts_", 0),
            )
            mlflow.log_dict(card, CARD)
            runs.append(TrainingRun(name, run.info.run_id, version, metrics))
    return runs


def best(runs: Sequence[TrainingRun], metric: str) -> TrainingRun:
    if metric not in METRICS:
        msg = f"Unknown metric '{metric}'; known: {', '.join(METRICS)}"
        raise ValueError(msg)
    scored = [r for r in runs if metric in r.metrics]
    if not scored:
        msg = f"No run has the metric '{metric}': it needs labels (DATA/labels/providers.parquet or --labels)."
        raise ValueError(msg)
    return max(scored, key=lambda r: r.metrics[metric])


@dataclass(frozen=True)
class Duel:
    """A candidate against the champion on verdicts the candidate did not learn from."""

    candidate: float
    champion: float | None
    held_out: int

    @property
    def candidate_wins(self) -> bool:
        return self.champion is None or self.candidate > self.champion


def duel(
    profiles: pl.DataFrame,
    verdicts: pl.DataFrame,
    detector: str,
    *,
    peer_columns: Sequence[str] = DEFAULT_PEER_COLUMNS,
    min_peers: int = DEFAULT_MIN_PEERS,
    settings: Settings | None = None,
    seed: int = 0,
) -> Duel:
    """Average precision on a third of the verdicts, of ``detector`` refitted on the other two
    thirds and of the current champion (None when there is none)."""
    rng = np.random.default_rng(seed)
    ordered = verdicts.sort(ID)
    held = pl.Series(rng.random(ordered.height) < 1 / 3)
    learn, test = ordered.filter(~held), ordered.filter(held)
    confirmed = test.filter(pl.col("confirmed")).select(ID)

    def precision(model: Model) -> float:
        scores = _provider_scores(model, profiles).join(test.select(ID), on=ID)
        return quality(scores, confirmed, max(1, confirmed.height)).get("average_precision", float("nan"))

    candidate = fit_profiles(
        profiles, detector, peer_columns=peer_columns, min_peers=min_peers, random_state=seed, verdicts=learn
    )
    champion = load_champion(settings)
    return Duel(precision(candidate), precision(champion[0]) if champion else None, test.height)


def promote(version: str, approved_by: str, settings: Settings | None = None) -> None:
    """Make ``version`` of the registered model the champion, approved by ``approved_by``
    (kept on the version, with the date: who answers for the model scoring the worklist)."""
    connect(settings)
    client = MlflowClient()
    client.set_model_version_tag(MODEL_NAME, version, "approved_by", approved_by)
    client.set_model_version_tag(MODEL_NAME, version, "approved_at", datetime.now(UTC).isoformat(timespec="seconds"))
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)


def registered_models(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every registered version of the model, newest first: its detector, when and by which
    run it was made, whether it is the champion, and who approved it and when."""
    connect(settings)
    client = MlflowClient()
    found = client.search_model_versions(f"name='{MODEL_NAME}'")
    if not found:
        return []
    # A search does not fill in the versions' aliases; the registered model has them.
    champion = client.get_registered_model(MODEL_NAME).aliases.get(CHAMPION)
    described = (_described(v, champion) for v in found)
    return sorted(described, key=lambda v: int(v["version"]), reverse=True)


def registered_card(version: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The model card of ``version`` with its registry entry (approval, champion); None when
    no such version is registered. A version trained before cards existed has ``card`` None."""
    connect(settings)
    client = MlflowClient()
    try:
        found = client.get_model_version(MODEL_NAME, version)
    except mlflow.exceptions.MlflowException:
        return None
    try:
        card = mlflow.artifacts.load_dict(f"runs:/{found.run_id}/{CARD}")
    except (mlflow.exceptions.MlflowException, OSError):
        card = None
    return {**_described(found, found.version if CHAMPION in (found.aliases or []) else None), "card": card}


def _described(version: Any, champion: Any) -> dict[str, Any]:
    """A version's registry entry; ``champion`` is the champion's version (if any)."""
    tags = version.tags or {}
    return {
        "version": str(version.version),
        "detector": tags.get("detector"),
        "created_at": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        "run_id": version.run_id,
        "champion": str(version.version) == str(champion),
        "approved_by": tags.get("approved_by"),
        "approved_at": tags.get("approved_at"),
    }


def load_champion(settings: Settings | None = None) -> tuple[Model, str] | None:
    """The champion model and its version, or None when none is registered."""
    connect(settings)
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    return model, str(version.version)

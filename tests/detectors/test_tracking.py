"""MLflow round trip on a temporary store, the champion in runs, and the quality floor."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from api import tables as t
from api.database import migrate
from detectors.model_card import temporal_holdout
from detectors.scoring import fit_profiles, score_profiles
from detectors.tracking import (
    CHAMPION,
    MODEL_NAME,
    best,
    duel,
    load_champion,
    precision_at_k,
    promote,
    quality,
    registered_card,
    registered_models,
    train_zoo,
)
from secm.champion import approve
from secm.cli import app
from secm.pipeline import profiles_of
from secm.pipeline import run as run_pipeline
from secm.settings import get_settings


@pytest.fixture(scope="module")
def profiles(synthetic: Path) -> pl.DataFrame:
    return profiles_of(synthetic)


@pytest.fixture(scope="module")
def labels(synthetic: Path) -> pl.DataFrame:
    return pl.read_parquet(synthetic / "labels" / "providers.parquet")


def test_log_register_load_by_alias_and_score_identically(profiles: pl.DataFrame, labels: pl.DataFrame) -> None:
    assert load_champion() is None
    runs = train_zoo(profiles, labels=labels, detectors=["ecod", "ensemble"])
    assert [r.detector for r in runs] == ["ecod", "ensemble"]
    winner = best(runs, "roc_auc")
    promote(winner.version, "Dr. Approver")
    tags = MlflowClient().get_model_version(MODEL_NAME, winner.version).tags
    assert tags["approved_by"] == "Dr. Approver"
    assert tags["approved_at"].startswith(str(datetime.now(UTC).year))
    champion = load_champion()
    assert champion is not None
    model, version = champion
    assert version == winner.version
    assert model.name == winner.detector
    expected = score_profiles(fit_profiles(profiles, winner.detector), profiles)
    assert_frame_equal(score_profiles(model, profiles), expected)

    client = MlflowClient()
    run = client.get_run(winner.run_id)
    assert run.data.params["detector"] == winner.detector
    assert run.data.params["peer_columns"] == "profession,qualification,region"
    assert len(run.data.params["data_fingerprint"]) == 16
    assert set(run.data.metrics) == {"roc_auc", "average_precision", "precision_at_k"}
    artifacts = {a.path for a in client.list_artifacts(winner.run_id, "plots")}
    assert artifacts == {"plots/score_distribution.png", "plots/feature_contributions.png"}
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == winner.version
    assert mlflow.get_tracking_uri().endswith("mlflow.db")

    listed = registered_models()
    assert [(m["version"], m["detector"], m["champion"]) for m in listed] == [
        (r.version, r.detector, r.version == winner.version) for r in reversed(runs)
    ]
    served = registered_card(winner.version)
    assert served is not None
    assert (served["approved_by"], served["champion"]) == ("Dr. Approver", True)
    card = served["card"]
    assert (card["model"], card["version"], card["run_id"]) == (winner.detector, winner.version, winner.run_id)
    periods = sorted(profiles["period"].unique().to_list())
    assert card["data"]["periods"] == periods
    assert card["data"]["profiles"] == profiles.height
    assert [f["name"] for f in card["features"]] == model.feature_names_
    holdout = card["evaluation"]["temporal_holdout"]
    assert (holdout["trained_on"], holdout["evaluated_on"]) == (periods[:-1], periods[-1])
    assert set(holdout["metrics"]) == {"roc_auc", "average_precision", "precision_at_k"}
    assert {g["dimension"] for g in card["fairness"]["groups"]} >= {"region", "language", "practice_size"}
    assert any("Two-sided" in limit for limit in card["known_limits"])
    assert registered_card("999") is None


def test_a_single_period_has_no_temporal_holdout(profiles: pl.DataFrame) -> None:
    first = profiles.filter(pl.col("period") == profiles["period"].min())
    assert temporal_holdout(first, "peer_evidence")["status"].startswith("not evaluated: one period only")


def test_providers_tied_at_the_kth_score_share_its_places_whatever_the_row_order() -> None:
    # Two places: the best (labelled) takes one; three tie for the other, one of them labelled.
    y = np.array([True, True, False, False, False])
    score = np.array([3.0, 2.0, 2.0, 2.0, 1.0])
    assert precision_at_k(y, score, 2) == pytest.approx((1 + 1 / 3) / 2)
    order = np.array([0, 3, 2, 1, 4])
    assert precision_at_k(y[order], score[order], 2) == precision_at_k(y, score, 2)
    assert precision_at_k(y, score, 1) == 1.0
    assert precision_at_k(y, np.array([3.0, np.nan, 2.0, 1.0, 0.0]), 2) == 0.5


def test_quality_floor_on_generated_providers(synthetic: Path, profiles: pl.DataFrame, labels: pl.DataFrame) -> None:
    scores = score_profiles(fit_profiles(profiles), profiles)
    # Legitimately atypical practices are false leads by construction; the detection bench
    # measures how much of the top they take. The floor is against ordinary providers.
    atypical = pl.read_parquet(synthetic / "labels" / "atypical.parquet")["provider_nihdi"]
    assert atypical.len() > 0
    metrics = quality(scores.filter(~pl.col("provider_nihdi").is_in(atypical.implode())), labels, k=20)
    assert metrics["roc_auc"] >= 0.85, metrics
    assert metrics["average_precision"] > labels.height / profiles["provider_nihdi"].n_unique()


def test_run_scores_with_the_champion_or_says_it_fitted_one(synthetic: Path, tmp_path: Path) -> None:
    first = run_pipeline(synthetic, tmp_path / "a")
    assert "no champion is registered" in first.info["detector"]["source"]
    assert first.info["detector"]["version"] is None
    scores = pl.read_parquet(tmp_path / "a" / "provider_scores.parquet")
    assert scores.columns[:5] == ["provider_nihdi", "peer_group", "score", "rank", "explanation"]
    assert scores.height == first.info["detector"]["profiles_scored"]
    assert scores["explanation"].str.len_chars().min() > 0  # type: ignore[operator]

    train = ["train", "--data", str(synthetic), "--detector", "iforest", "--promote"]
    refused = CliRunner().invoke(app, train)
    assert refused.exit_code == 1
    assert "--promote needs --approved-by NAME" in refused.output
    result = CliRunner().invoke(app, [*train, "--approved-by", "Dr. Approver"])
    assert result.exit_code == 0, result.output
    assert "Champion: iforest" in result.output
    assert "approved by Dr. Approver" in " ".join(result.output.split())
    with migrate(get_settings().effective_database_url).connect() as connection:
        audited = connection.execute(
            sa.select(t.audit_log.c.actor, t.audit_log.c.role, t.audit_log.c.detail).where(
                t.audit_log.c.action == "promote_model"
            )
        ).all()
    assert [(actor, role, detail["detector"], detail["version"]) for actor, role, detail in audited] == [
        ("Dr. Approver", "approver", "iforest", "1")
    ]
    second = run_pipeline(synthetic, tmp_path / "b")
    assert second.info["detector"] == {
        "model": "iforest",
        "version": "1",
        "source": "registered champion, version 1",
        "period": "year",
        "profiles_scored": scores.height,
    }
    assert json.loads((tmp_path / "b" / "run.json").read_text())["detector"]["model"] == "iforest"


def test_train_and_detect_errors_are_one_line(synthetic: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(synthetic), "--detector", "svm"])
    assert result.exit_code == 1
    assert "Unknown detector(s) ['svm']" in result.output
    unlabelled = ["train", "--data", str(synthetic), "--labels", str(tmp_path / "none.parquet")]
    assert "No labels file" in runner.invoke(app, unlabelled).output
    table = tmp_path / "features.csv"
    pl.DataFrame({"npi": ["a", "b", "c"], "x": [1.0, 2.0, 30.0]}).write_csv(table)
    result = runner.invoke(app, ["detect", "--features", str(table), "--id", "NPI", "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 1
    assert "Column 'NPI' is not in the table" in result.output
    out = tmp_path / "o.parquet"
    result = runner.invoke(
        app, ["detect", "--features", str(table), "--id", "npi", "--detector", "hbos", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out).columns == ["npi", "score", "rank"]
    labels = tmp_path / "labels.csv"
    pl.DataFrame({"npi": ["a", "c"], "fraud": ["no", "yes"]}).write_csv(labels)
    detect = ["detect", "--features", str(table), "--id", "npi", "--detector", "hbos", "--out", str(out)]
    detect += ["--labels", str(labels)]
    result = runner.invoke(app, detect)
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "The labels file" in message
    assert "no column(s) ['confirmed']" in message
    result = runner.invoke(app, [*detect, "--label-column", "fraud"])
    assert result.exit_code == 0, result.output
    assert "guided by 2 labels" in result.output  # too few to learn from: the order stays unsupervised


def test_verdicts_guide_training_and_gate_promotion(
    synthetic: Path, profiles: pl.DataFrame, labels: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed cases in the application database reach secm train; the champion must be beaten."""
    ordinary = profiles.filter(~pl.col("provider_nihdi").is_in(labels["provider_nihdi"].implode()))
    cases = [(p, "confirmed") for p in labels["provider_nihdi"]]
    cases += [(p, "unfounded") for p in ordinary["provider_nihdi"].unique().sort().head(12)]
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("SECM_DATABASE_URL", url)
    now = datetime.now(UTC)
    with migrate(url).begin() as connection:
        connection.execute(
            t.runs.insert().values(
                run_id="r",
                created_at=now,
                published_at=now,
                dataset="",
                legislation="current",
                status="complete",
                info={},
            )
        )
        connection.execute(
            t.cases.insert(),
            [
                {
                    "provider_nihdi": nihdi,
                    "run_id": "r",
                    "status": "closed",
                    "outcome": outcome,
                    "notes": "",
                    "opened_by": "test",
                    "opened_at": now,
                    "updated_at": now,
                    "closed_at": now,
                }
                for nihdi, outcome in cases
            ],
        )
    train = ["train", "--data", str(synthetic), "--detector", "peer_evidence", "--promote", "--approved-by", "SECM"]
    runner = CliRunner()
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"guided by {len(cases)} closed cases" in output
    assert "held-out verdicts" in output
    assert "Champion: peer_evidence" in output  # no champion yet: the candidate wins
    champion = load_champion()
    assert champion is not None
    assert champion[0].weights_ is not None  # type: ignore[union-attr]

    # The same candidate again does not beat itself: the champion stays.
    again = runner.invoke(app, train)
    assert again.exit_code == 0, again.output
    assert "The champion stays" in again.output
    verdicts = pl.DataFrame(
        {"provider_nihdi": [c[0] for c in cases], "confirmed": [c[1] == "confirmed" for c in cases]}
    )
    match = duel(profiles, verdicts, "peer_evidence")
    assert match.champion == pytest.approx(match.candidate)
    assert 0 < match.held_out < len(cases)


@pytest.mark.parametrize(("name", "message"), [("  ", "approved by someone"), ("x" * 129, "at most 128 characters")])
def test_a_champion_needs_a_named_approver(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        approve("1", name, {})
    assert load_champion() is None

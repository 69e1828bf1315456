"""Purge and retention: what is purged leaves no trace but the audit log's; what a case or
the champion relies on stays."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import mlflow
import polars as pl
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from typer.testing import CliRunner

from api import tables as t
from api.database import migrate
from detectors.tracking import MODEL_NAME, promote, train_zoo
from secm.cli import app
from secm.pipeline import profiles_of
from secm.settings import get_settings

runner = CliRunner()


def _run(synthetic: Path, out: Path) -> str:
    result = runner.invoke(app, ["run", "--data", str(synthetic), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return str(json.loads((out / "run.json").read_text())["run_id"])


def _traces(engine: sa.Engine, run_id: str) -> dict[str, int]:
    """Rows that name ``run_id`` in every table but the audit log."""
    found = {}
    with engine.connect() as connection:
        for table in t.metadata.sorted_tables:
            if "run_id" in table.c and table.name != t.audit_log.name:
                n = connection.execute(sa.select(sa.func.count()).where(table.c.run_id == run_id)).scalar()
                if n:
                    found[table.name] = n
    return found


def _age(engine: sa.Engine, run_id: str, days: int) -> None:
    with engine.begin() as connection:
        moment = datetime.now(UTC) - timedelta(days=days)
        connection.execute(t.runs.update().where(t.runs.c.run_id == run_id).values(created_at=moment))


def test_purge_removes_old_runs_models_and_files_and_keeps_what_is_relied_on(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, cited, new = (_run(synthetic, tmp_path / name) for name in ("old", "cited", "new"))
    engine = migrate(get_settings().effective_database_url)
    for run_id in (old, cited):
        _age(engine, run_id, 2000)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            t.cases.insert().values(
                provider_nihdi="10000000001",
                run_id=cited,
                status="open",
                notes="",
                opened_by="inspector",
                opened_at=now,
                updated_at=now,
            )
        )

    # Retention: raw values of quarantined rows go once the run is older than the setting.
    assert pl.read_parquet(tmp_path / "old" / "quarantine.parquet")["raw_values"].null_count() == 0
    monkeypatch.setenv("SECM_RETENTION_DAYS", "30")
    again = runner.invoke(app, ["run", "--data", str(synthetic), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert "Raw values of quarantined rows blanked in 2 run(s)" in " ".join(again.output.split())
    blanked = pl.read_parquet(tmp_path / "old" / "quarantine.parquet")
    assert blanked.height > 0
    assert blanked["raw_values"].null_count() == blanked.height
    assert blanked["reasons"].list.len().min() >= 1  # type: ignore[operator]
    assert pl.read_parquet(tmp_path / "new" / "quarantine.parquet")["raw_values"].null_count() == 0

    first = runner.invoke(app, ["purge", "--before", (date.today() - timedelta(days=1000)).isoformat(), "--by", "dpo"])
    assert first.exit_code == 0, first.output
    assert "Purged 1 run(s), 1 output folder(s), 0 MLflow" in " ".join(first.output.split())
    assert f"Kept {cited}: case 1 refers to it" in " ".join(first.output.split())
    assert _traces(engine, old) == {}
    assert not (tmp_path / "old").exists()
    assert _traces(engine, cited)["runs"] == 1
    assert (tmp_path / "cited" / "run.json").exists()
    assert _traces(engine, new)["flags"] > 0

    profiles = profiles_of(synthetic)
    runs = train_zoo(profiles, detectors=["peer_evidence", "hbos"])
    champion, other = runs
    promote(champion.version, "Dr. Approver")
    client = MlflowClient()
    model_id = client.get_model_version(MODEL_NAME, other.version).model_id
    artifacts = Path(client.get_run(other.run_id).info.artifact_uri.removeprefix("file://"))
    assert artifacts.exists()

    second = runner.invoke(app, ["purge", "--before", (date.today() + timedelta(days=1)).isoformat(), "--by", "dpo"])
    assert second.exit_code == 0, second.output
    said = " ".join(second.output.split())
    assert "1 MLflow training run(s) and 1 model version(s)" in said
    assert f"Kept mlflow:{champion.run_id}: the run of the champion model" in said
    for run_id in (new, old):
        assert _traces(engine, run_id) == {}
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_run(other.run_id)
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version(MODEL_NAME, other.version)
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_logged_model(model_id)
    assert not artifacts.exists()
    assert not any(get_settings().resolved_home.glob(f"mlartifacts/models/{model_id}"))
    assert client.get_run(champion.run_id).info.lifecycle_stage == "active"

    with engine.connect() as connection:
        logged = connection.execute(
            sa.select(t.audit_log.c.actor, t.audit_log.c.detail).where(t.audit_log.c.action == "purge")
        ).all()
    assert [actor for actor, _ in logged] == ["dpo", "dpo"]
    assert logged[0][1]["runs"] == [old]
    assert logged[1][1]["mlflow_runs"] == [other.run_id]
    assert logged[1][1]["model_versions"] == [other.version]

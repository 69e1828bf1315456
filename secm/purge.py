"""Forgetting on schedule: old runs, their outputs and old models go; the audit log stays.

Personal data is kept no longer than its purpose needs. ``purge(before)`` removes every
published run created before a date: its rows in the application database (flags, scores,
profiles, worklist, quarantine counts, reference rows), the files it wrote (the contract's
outputs, in the folder ``run.json`` names), and every MLflow training run started before
that date with its artifacts, logged models and registered versions. What an inspection still
relies on is kept and said: a run a case or a campaign refers to (the case file keeps what
prompted it), and the champion model. The purge itself is written to the audit log, which is
never purged.

Quarantined rows keep the raw values as they were typed, to show what was wrong with them;
``SECM_RETENTION_DAYS`` bounds how long. ``expire_raw_values`` blanks the raw values of the
quarantine files of runs older than that, keeping their table, row and reasons (the counts
stay true); ``secm run`` and ``secm purge`` both apply it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from api import tables as t
from api.auth import Caller, audit
from api.database import migrate
from secm.settings import Settings, get_settings

# What a run writes in its output folder (the data contract's output files).
OUTPUT_FILES = ("flags.parquet", "quarantine.parquet", "profiles.parquet", "provider_scores.parquet", "run.json")


@dataclass
class Purged:
    """What a purge removed, and what it kept and why."""

    runs: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    mlflow_runs: list[str] = field(default_factory=list)
    model_versions: list[str] = field(default_factory=list)
    raw_values_expired: list[str] = field(default_factory=list)

    def as_detail(self, before: date) -> dict[str, Any]:
        return {"before": before.isoformat(), **self.__dict__}


def _moment(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _run_tables() -> list[sa.Table]:
    """Every table holding a run's own rows (not the cases and campaigns that refer to a run)."""
    keeping = {t.cases.name, t.campaigns.name, t.runs.name}
    return [table for table in t.metadata.sorted_tables if "run_id" in table.c and table.name not in keeping]


def _outputs_of(info: dict[str, Any] | None, run_id: str) -> Path | None:
    """The output folder a run recorded, if it still holds that run's ``run.json``."""
    folder = Path(str((info or {}).get("outputs") or ""))
    written = folder / "run.json"
    if not str(folder) or not written.is_file():
        return None
    try:
        return folder if json.loads(written.read_text(encoding="utf-8")).get("run_id") == run_id else None
    except (OSError, ValueError):
        return None


def _remove_outputs(folder: Path) -> None:
    for name in OUTPUT_FILES:
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def expire_raw_values(connection: sa.Connection, retention_days: int) -> list[str]:
    """Blank the raw values in the quarantine files of published runs created more than
    ``retention_days`` ago; the runs whose files changed."""
    limit = datetime.now(UTC) - timedelta(days=retention_days)
    old = connection.execute(sa.select(t.runs.c.run_id, t.runs.c.info).where(t.runs.c.created_at < limit)).all()
    expired = []
    for run_id, info in old:
        folder = _outputs_of(info, run_id)
        file = folder / "quarantine.parquet" if folder else None
        if file is None or not file.is_file():
            continue
        quarantine = pl.read_parquet(file)
        if "raw_values" not in quarantine.columns or quarantine["raw_values"].null_count() == quarantine.height:
            continue
        quarantine.with_columns(pl.lit(None, quarantine.schema["raw_values"]).alias("raw_values")).write_parquet(file)
        expired.append(run_id)
    return expired


def _purge_mlflow(before: date, settings: Settings, purged: Purged) -> None:
    """Delete the MLflow training runs started before ``before`` (but the champion's), their
    registered versions and logged models, then remove them for good with ``mlflow gc``."""
    import mlflow
    from mlflow import MlflowClient

    from detectors.tracking import CHAMPION, EXPERIMENT, MODEL_NAME, connect

    connect(settings)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return
    champion_run = None
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        champion_run = client.get_model_version_by_alias(MODEL_NAME, CHAMPION).run_id
    cutoff = int(_moment(before).timestamp() * 1000)
    old = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.start_time < {cutoff}", max_results=50_000
    )
    versions = client.search_model_versions(f"name='{MODEL_NAME}'") if old else []
    models: list[str] = []
    for found in old:
        run_id = found.info.run_id
        if run_id == champion_run:
            purged.kept[f"mlflow:{run_id}"] = "the run of the champion model"
            continue
        for version in versions:
            if version.run_id == run_id:
                client.delete_model_version(MODEL_NAME, version.version)
                purged.model_versions.append(str(version.version))
        for logged in client.search_logged_models(
            [experiment.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        ):
            client.delete_logged_model(logged.model_id)
            models.append(logged.model_id)
        client.delete_run(run_id)
        purged.mlflow_runs.append(run_id)
    if not purged.mlflow_runs:
        return
    uri = settings.effective_mlflow_uri
    command = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--tracking-uri", uri]
    command += ["--run-ids", ",".join(purged.mlflow_runs)]
    if models:
        command += ["--logged-model-ids", ",".join(models)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ValueError(f"mlflow gc could not remove the deleted runs: {last}")


def purge(before: date, by: str, settings: Settings | None = None) -> Purged:
    """Remove what was made before ``before`` (see the module); audited as ``by``."""
    settings = settings or get_settings()
    engine = migrate(settings.effective_database_url)
    purged = Purged()
    with engine.begin() as connection:
        old = connection.execute(
            sa.select(t.runs.c.run_id, t.runs.c.info).where(t.runs.c.created_at < _moment(before))
        ).all()
        cited: dict[str, str] = {}
        for table, what in ((t.campaigns, "campaign"), (t.cases, "case")):
            label = table.c.name if what == "campaign" else table.c.id
            for run_id, name in connection.execute(sa.select(table.c.run_id, label)):
                cited.setdefault(run_id, f"{what} {name} refers to it")
        folders: dict[str, Path | None] = {}
        for run_id, info in old:
            if run_id in cited:
                purged.kept[run_id] = cited[run_id]
                continue
            purged.runs.append(run_id)
            folders[run_id] = _outputs_of(info, run_id)
        for table in _run_tables():
            connection.execute(table.delete().where(table.c.run_id.in_(purged.runs)))
        connection.execute(t.runs.delete().where(t.runs.c.run_id.in_(purged.runs)))
        purged.outputs = [str(folder) for folder in folders.values() if folder is not None]
        purged.raw_values_expired = expire_raw_values(connection, settings.retention_days)
        _purge_mlflow(before, settings, purged)
        audit(connection, Caller(by, "operator"), "purge", detail=purged.as_detail(before))
    # Once the database has forgotten the runs, their files go too.
    for folder in purged.outputs:
        _remove_outputs(Path(folder))
    return purged

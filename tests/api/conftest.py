"""A published run in a real database: a SQLite file, and PostgreSQL when the machine has one.

PostgreSQL is reached at ``SECM_TEST_POSTGRES_URL`` (default: the local server, trust auth,
database ``test``); each test gets its own schema. Without a server the PostgreSQL cases are
skipped, unless ``SECM_REQUIRE_POSTGRES`` is set (CI), which makes that a failure.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api import tables as t
from api.app import create_app
from api.auth import create_token
from api.database import engine_for, migrate
from api.publish import publish
from data_contracts import load_dataset
from detectors.profiles import provider_profiles
from detectors.scoring import fit_profiles, score_profiles
from rules import enriched_lines, evaluate, load_catalog
from secm.pipeline import (
    quarantine_by_insurer,
    quarantine_by_year,
    software_counts,
    software_statistics,
    volume_counts,
    volumes,
)

POSTGRES = os.environ.get("SECM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Published:
    info: dict[str, object]
    flags: pl.DataFrame
    scores: pl.DataFrame
    profiles: pl.DataFrame
    quarantine: pl.DataFrame
    references: dict[str, pl.DataFrame]

    def into(self, url: str, run_id: str = "run-1", created_at: str = "2026-01-01T00:00:00+00:00") -> None:
        info = {**self.info, "run_id": run_id, "created_at": created_at}
        publish(
            url,
            info,
            flags=self.flags,
            scores=self.scores,
            profiles=self.profiles,
            quarantine=self.quarantine,
            references=self.references,
        )


@pytest.fixture(scope="session")
def results(synthetic: Path) -> Published:
    dataset = load_dataset(synthetic)
    tables = dataset.lazy_tables()
    lines = enriched_lines(tables)
    flags = evaluate(tables, lines=lines)
    profiles = provider_profiles(lines, flags)
    scores = score_profiles(fit_profiles(profiles), profiles)
    info = {
        "dataset": str(synthetic),
        "legislation": "current",
        "catalog_version": load_catalog().version,
        "detector": {"model": "peer_evidence", "version": None},
        "rules": {},
        "volumes": volumes(volume_counts(dataset.tables["billing_lines"])),
        "software": software_statistics(software_counts(lines, flags)),
        "quarantine_by_insurer": quarantine_by_insurer(dataset.quarantine),
        "quarantine_by_year": quarantine_by_year(dataset.quarantine),
    }
    return Published(info, flags, scores, profiles, dataset.quarantine, dataset.tables)


def rows_of(url: str, run_id: str) -> dict[str, int]:
    """Rows of run ``run_id`` in each table of the application database at ``url``."""
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            return {
                table.name: connection.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c.run_id == run_id)
                ).scalar_one()
                for table in t.metadata.sorted_tables
                if "run_id" in table.c
            }
    finally:
        engine.dispose()


def postgres_schema_url() -> Iterator[str]:
    try:
        with psycopg.connect(POSTGRES, connect_timeout=3, autocommit=True) as connection:
            schema = f"t_{uuid.uuid4().hex[:12]}"
            connection.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        message = f"no PostgreSQL server at {POSTGRES}: {str(exc).splitlines()[0]}"
        if os.environ.get("SECM_REQUIRE_POSTGRES"):
            pytest.fail(f"SECM_REQUIRE_POSTGRES is set but there is {message}")
        pytest.skip(message)
    yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    else:
        yield from postgres_schema_url()


# How soon the test service reads a token again: a revocation or a new run takes effect
# once this has passed (the service's default is a second).
RECHECK_SECONDS = 0.2


@dataclass
class Service:
    client: TestClient
    url: str
    tokens: dict[str, str]

    @staticmethod
    def after_recheck() -> None:
        """Wait until every token is read again (see ``RECHECK_SECONDS``)."""
        time.sleep(RECHECK_SECONDS)

    def get(self, path: str, role: str = "inspector", **params: object):  # type: ignore[no-untyped-def]
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {self.tokens[role]}"})

    def send(self, method: str, path: str, role: str = "inspector", **body: object):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return self.client.request(method, path, json=body, headers=headers)


@pytest.fixture
def service(database_url: str, results: Published) -> Iterator[Service]:
    results.into(database_url)
    engine = migrate(database_url)
    tokens = {
        role: create_token(engine, role, f"{role}-test")[1] for role in ("inspector", "data_scientist", "sca", "admin")
    }
    with TestClient(create_app(database_url, token_recheck_seconds=RECHECK_SECONDS)) as client:
        yield Service(client, database_url, tokens)
    engine.dispose()


def claim_line(claim_id: str, provider: str, **changes: Any) -> dict[str, Any]:
    """A clean billing line as ``POST /claims/check`` takes it (a GP's office consultation)."""
    row = {
        "claim_id": claim_id,
        "provider_nihdi": provider,
        "patient_id": f"P{claim_id}",
        "insurer_code": "100",
        "nomenclature_code": "101076",
        "service_date": "2024-03-15",
        "service_time": "10:00",
        "channel": "eattest",
        "submitted_date": "2024-03-15",
        "amount_fee": 31.5,
        "amount_reimbursed": 23.63,
        "place_of_service": "office",
    }
    return {**row, **changes}

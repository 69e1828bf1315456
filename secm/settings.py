"""The one place that reads the environment and knows the layout of ``SECM_HOME``."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; every value has an embedded default."""

    model_config = SettingsConfigDict(env_prefix="SECM_", extra="ignore")

    home: Path = Field(default=Path(".secm"), description="Root of local state (SECM_HOME).")
    database_url: str | None = Field(
        default=None, description="Application database; SQLite under SECM_HOME when unset."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow store; SQLite under SECM_HOME when unset.",
    )

    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Key of the provider pseudonyms data scientists see (SECM_PSEUDONYM_KEY); "
        "default: a random key kept in SECM_HOME/pseudonym.key.",
    )
    session_key: SecretStr | None = Field(
        default=None,
        description="Key signing the workbench's session cookies (SECM_SESSION_KEY); "
        "default: a random key kept in SECM_HOME/session.key.",
    )
    session_hours: float = Field(
        default=8.0, gt=0, le=24 * 30, description="How long a workbench sign-in lasts (SECM_SESSION_HOURS)."
    )
    retention_days: int = Field(
        default=365,
        ge=1,
        le=36_500,
        description="Days the raw values of quarantined rows are kept in a run's outputs (SECM_RETENTION_DAYS).",
    )
    report_min_cell: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Smallest cell the annual report publishes; smaller ones are suppressed (SECM_REPORT_MIN_CELL).",
    )
    report_targets: Path | None = Field(
        default=None,
        description="YAML file of the annual report's targets per year (SECM_REPORT_TARGETS); "
        "default SECM_HOME/targets.yaml when it exists.",
    )
    serve_concurrency: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Requests at work at once per server process, and database connections in its pool.",
    )
    serve_check_concurrency: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Claim checks let in at once per server process, to be decided in batches, beside the other requests.",
    )
    serve_queue_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How long a request beyond the limit waits before a 503."
    )
    serve_queue_length: int = Field(
        default=1000, ge=0, description="Requests that may wait per process; beyond, 503 at once."
    )
    serve_max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest request body accepted; beyond, 413."
    )
    serve_token_recheck_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="A token admitted is read again after this long: how soon a revocation or a new run takes effect.",
    )

    @cached_property
    def resolved_home(self) -> Path:
        path = self.home.expanduser().resolve()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_uid == os.getuid():
            path.chmod(0o700)  # a home made by an earlier version, or by hand, is closed too
        return path

    @property
    def pseudonym_secret(self) -> bytes:
        """The pseudonym key: the setting, or one kept under SECM_HOME (:meth:`_kept_secret`)."""
        return self._kept_secret("pseudonym", self.pseudonym_key)

    @property
    def session_secret(self) -> bytes:
        """The key signing the workbench's session cookies: the setting, or one kept under SECM_HOME."""
        return self._kept_secret("session", self.session_key)

    def _kept_secret(self, name: str, given: SecretStr | None) -> bytes:
        """``given``, or a key made at random once and kept in SECM_HOME/NAME.key (readable by
        its owner only), so that it stays the same from run to run and process to process."""
        if given is not None:
            return given.get_secret_value().encode()
        file = self.resolved_home / f"{name}.key"
        if not file.exists():
            # Written aside, then linked in place: server processes starting together all
            # end up reading the one key that was linked first, never a half-written file.
            draft = file.with_name(f".{name}.key.{os.getpid()}")
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as written:
                written.write(secrets.token_hex(32))
            try:
                os.link(draft, file)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return file.read_text().strip().encode()

    @property
    def targets_file(self) -> Path | None:
        default = self.resolved_home / "targets.yaml"
        return self.report_targets or (default if default.exists() else None)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_home / 'secm.db'}"

    @property
    def effective_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def may_hold_models(self) -> bool:
        """False while no model can be registered: the default MLflow store, a SQLite file
        under SECM_HOME, was never created (a run then needs neither to import nor to open it)."""
        return self.mlflow_tracking_uri is not None or (self.resolved_home / "mlflow.db").exists()


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; tests change the environment)."""
    return Settings()

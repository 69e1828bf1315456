"""Migrations: a database created by an earlier revision is upgraded to the same schema as a new one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from api.database import HEAD_REVISION, MIGRATIONS, engine_for, migrate


def _columns(url: str) -> dict[str, set[str]]:
    inspector = sa.inspect(engine_for(url))
    return {table: {c["name"] for c in inspector.get_columns(table)} for table in inspector.get_table_names()}


def _indexes(url: str) -> dict[str, set[str]]:
    inspector = sa.inspect(engine_for(url))
    return {table: {i["name"] or "" for i in inspector.get_indexes(table)} for table in inspector.get_table_names()}


def test_an_old_database_is_upgraded_to_the_new_schema(tmp_path: Path) -> None:
    old = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine_for(old).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    assert "persistence" not in _columns(old)["flagged_providers"]
    assert "top_decile_streak" not in _columns(old)["provider_scores"]
    assert "expires_at" not in _columns(old)["tokens"]
    assert "campaigns" not in _columns(old)

    migrate(old)
    new = f"sqlite:///{tmp_path / 'new.db'}"
    migrate(new)
    assert _columns(old) == _columns(new)
    assert _indexes(old) == _indexes(new)
    assert "persistence" in _columns(new)["flagged_providers"]
    assert "ix_flagged_run_persistence" in _indexes(new)["flagged_providers"]
    assert {"expires_at", "last_used_at"} <= _columns(new)["tokens"]
    assert {"name", "rule_id", "criteria"} <= _columns(new)["campaigns"]
    assert "arm" in _columns(new)["campaign_providers"]


def test_the_revision_a_database_is_checked_against_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_database_at_the_head_revision_opens_without_alembic(tmp_path: Path) -> None:
    """Alembic is imported only to migrate: a process that opens a current database (a run's
    publish, a token created) does not pay for it. An old one is still upgraded (above)."""
    url = f"sqlite:///{tmp_path / 'secm.db'}"
    migrate(url)
    opens = "import sys; from api.database import migrate; migrate(sys.argv[1]); print('alembic' in sys.modules)"
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    answers = [
        subprocess.run([sys.executable, "-c", opens, u], capture_output=True, text=True, check=True).stdout.strip()
        for u in (url, fresh)
    ]
    assert answers == ["False", "True"]
    assert "tokens" in sa.inspect(engine_for(fresh)).get_table_names()

"""From the command line: a run is published, a token is made, the served API answers over HTTP."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from bench.service import serving
from secm.cli import app
from secm.settings import get_settings


def test_run_publishes_and_serve_answers_with_a_created_token(synthetic: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--data", str(synthetic), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "published to the application database" in result.output
    created = runner.invoke(app, ["token", "create", "--role", "inspector", "--name", "alice"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("secm_")
    assert token not in Path(os.environ["SECM_HOME"], "secm.db").read_bytes().decode("latin-1")  # stored hashed

    home = os.environ["SECM_HOME"]
    with (tmp_path / "serve.log").open("w") as log, serving(home, f"sqlite:///{home}/secm.db", log=log) as (base, _):
        headers = {"Authorization": f"Bearer {token}"}
        flagged = httpx2.get(f"{base}/providers/flagged", headers=headers, params={"rule": "DUPLICATE_BILLING"})
        assert flagged.status_code == 200
        assert flagged.json()["total"] == 1
        assert runner.invoke(app, ["token", "revoke", "--name", "alice"]).exit_code == 0
        time.sleep(get_settings().serve_token_recheck_seconds)  # a revocation takes effect within it
        assert httpx2.get(f"{base}/rules", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "create", "--role", "auditor"], "Unknown role 'auditor'"),
        (["token", "revoke", "--name", "nobody"], "No active token named 'nobody'"),
    ],
)
def test_token_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output

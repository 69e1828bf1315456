"""What users of the service expect beyond its answers: bounded bodies, security headers,
tokens that expire and say when they were last used."""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from api.app import create_app
from api.auth import create_token, list_tokens, parse_duration
from api.database import migrate
from secm.cli import app as cli
from tests.api.conftest import RECHECK_SECONDS, Service

LIMIT = 4096


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[TestClient, str, str]]:
    """A service with a 4 KiB body limit and an inspector's token, over a SQLite file."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    _, token = create_token(migrate(url), "inspector", "small")
    with TestClient(create_app(url, max_body_bytes=LIMIT, token_recheck_seconds=RECHECK_SECONDS)) as client:
        yield client, url, token


def test_bodies_over_the_limit_get_413_announced_or_streamed(small: tuple[TestClient, str, str]) -> None:
    client, _, token = small
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = b'{"provider_nihdi": "' + b"1" * LIMIT + b'"}'
    announced = client.post("/cases", content=body, headers=auth)
    assert announced.status_code == 413
    assert f"exceeds {LIMIT:,} bytes" in announced.json()["detail"]
    streamed = client.post("/cases", content=iter([body[:3000], body[3000:]]), headers=auth)
    assert streamed.status_code == 413
    # Under the limit, a streamed body reaches the endpoint whole: here, its validation.
    fits = client.post("/cases", content=iter([b'{"provider_nihdi": ', b'"1", "x": 1}']), headers=auth)
    assert fits.status_code == 422
    assert "Extra inputs are not permitted" in fits.text


def test_every_answer_carries_the_security_headers(service: Service, small: tuple[TestClient, str, str]) -> None:
    nihdi = service.get("/providers/flagged").json()["items"][0]["provider_nihdi"]
    for response in (
        service.get(f"/providers/{nihdi}/claims", purpose="checking the security headers"),
        service.client.get("/providers/flagged"),  # 401
        service.get("/audit"),  # 403
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert response.headers["cache-control"] == "no-store"
    docs = service.client.get("/docs")
    assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]


def test_tokens_expire_with_a_clear_401(small: tuple[TestClient, str, str]) -> None:
    client, url, _ = small
    _, expired = create_token(migrate(url), "inspector", "brief", expires_in=timedelta(minutes=1))
    later = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(sep=" ")
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE tokens SET expires_at = ? WHERE name = 'brief'", (later,))
    response = client.get("/rules", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert "Token expired on" in response.json()["detail"]


def test_a_token_read_lately_still_expires_on_time(tmp_path: Path) -> None:
    """The expiry read with a token is checked on every request, not only when it is read again."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    _, token = create_token(migrate(url), "inspector", "brief", expires_in=timedelta(minutes=1))
    soon = datetime.now(UTC) + timedelta(seconds=1)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE tokens SET expires_at = ? WHERE name = 'brief'", (soon.isoformat(sep=" "),))
    with TestClient(create_app(url, token_recheck_seconds=60)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/rules", headers=headers).status_code == 200
        time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
        response = client.get("/rules", headers=headers)
    assert response.status_code == 401
    assert "Token expired on" in response.json()["detail"]


def _last_used(url: str) -> datetime | None:
    """When the fixture's token was last used, as ``secm token list`` reports it."""
    return next(t for t in list_tokens(migrate(url)) if t["name"] == "small")["last_used_at"]


def test_last_use_is_recorded_to_the_minute(small: tuple[TestClient, str, str]) -> None:
    client, url, token = small
    assert _last_used(url) is None
    assert client.get("/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    first = _last_used(url)
    assert first is not None
    assert datetime.now(UTC) - first < timedelta(minutes=1)
    assert client.get("/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    again = _last_used(url)
    assert again == first  # within LAST_USE_RESOLUTION: no write on every request


@pytest.mark.parametrize(("text", "days"), [("90d", 90), ("12h", 0.5), ("30m", 30 / 1440)])
def test_durations(text: str, days: float) -> None:
    assert parse_duration(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["0d", "90", "d", "-1d", "1w", "1.5d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        parse_duration(text)


def test_token_cli_expiry_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECM_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    made = runner.invoke(cli, ["token", "create", "--role", "sca", "--name", "report", "--expires-in", "30d"])
    assert made.exit_code == 0, made.output
    assert "valid for 30d" in made.output
    forever = runner.invoke(cli, ["token", "create", "--role", "sca", "--name", "kept", "--expires-in", "never"])
    assert "valid until revoked" in forever.output
    bad = runner.invoke(cli, ["token", "create", "--role", "sca", "--expires-in", "soon"])
    assert bad.exit_code == 1
    assert "positive whole number" in bad.output
    listed = runner.invoke(cli, ["token", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if "report" in line)
    in_30_days = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    assert in_30_days in row
    kept = next(line for line in listed.output.splitlines() if "kept" in line)
    cells = [cell.strip() for cell in kept.strip("│ ").split("│")]
    assert cells[:2] == ["kept", "sca"]
    assert cells[3:] == ["-", "-", "-"]  # no expiry, never used, not revoked


def test_recording_a_use_never_waits_for_a_publishing_writer(small: tuple[TestClient, str, str]) -> None:
    client, url, token = small
    writer = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # what a publishing run holds for its whole transaction
    try:
        started = time.perf_counter()
        assert client.get("/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert time.perf_counter() - started < 2  # not the 30 s busy timeout
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert _last_used(url) is None
    time.sleep(RECHECK_SECONDS)  # the next request reads the token again, and records its use
    assert client.get("/rules", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert _last_used(url) is not None


# What Python's JSON reader takes that JSON does not have, and numbers too large for a float.
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]
FIELDS = {
    ("post", "/cases"): {"provider_nihdi": '"10001234003"', "notes": '""', "run_id": "null"},
    ("patch", "/cases/1"): {"status": '"open"', "amount_to_recover_eur": "1.5", "notes": '""'},
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operation=st.sampled_from(sorted(FIELDS)),
    value=st.one_of(st.sampled_from(NON_FINITE), st.integers(min_value=10**20, max_value=10**400).map(str)),
    data=st.data(),
)
def test_non_finite_and_huge_numbers_are_answered_422(
    small: tuple[TestClient, str, str], operation: tuple[str, str], value: str, data: st.DataObject
) -> None:
    client, _, token = small
    fields = dict(FIELDS[operation])
    fields[data.draw(st.sampled_from(sorted(fields)))] = value
    body = "{" + ",".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = client.request(*operation, content=body, headers=headers)
    assert answer.status_code == 422, (body, answer.text)
    assert answer.json()["detail"]


@pytest.mark.parametrize("nihdi", ["１０００１２３４００３", "١٠٠٠١٢٣٤٠٠٣", "1000123400３"])
def test_numbers_in_other_scripts_are_422_not_404(small: tuple[TestClient, str, str], nihdi: str) -> None:
    client, _, token = small
    answer = client.get(f"/providers/{nihdi}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 422
    assert "pattern" in answer.text


def test_files_under_the_home_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # made open by hand: secm closes it
    monkeypatch.setenv("SECM_HOME", str(home))
    made = CliRunner().invoke(cli, ["token", "create", "--role", "inspector"])
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "secm.db").stat().st_mode) == 0o600

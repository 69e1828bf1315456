"""The service through real HTTP calls on a real database (SQLite file and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from api import tables as t
from api.auth import revoke_token
from api.database import migrate
from api.pseudonyms import pseudonym
from rules import load_catalog
from secm.settings import get_settings
from tests.api.conftest import Published, Service

PURPOSE = "preliminary look before opening a case"
ENDPOINTS = [
    ("get", "/rules"),
    ("get", "/runs"),
    ("get", "/providers/flagged"),
    ("get", "/providers/11006431003"),
    ("get", "/providers/11006431003/claims"),
    ("get", "/cases"),
    ("get", "/cases/1"),
    ("get", "/cases/outcomes"),
    ("post", "/cases"),
    ("patch", "/cases/1"),
    ("get", "/audit"),
]


def _top_flagged(results: Published) -> str:
    totals = results.flags.group_by("provider_nihdi").agg(pl.col("amount_at_stake_eur").sum())
    return str(totals.sort("amount_at_stake_eur", "provider_nihdi", descending=[True, False])["provider_nihdi"][0])


def test_health_needs_no_token_and_everything_else_does(service: Service) -> None:
    assert service.client.get("/health").json() == {"status": "ok"}
    for method, path in ENDPOINTS:
        missing = service.client.request(method, path)
        assert missing.status_code == 401, path
        assert missing.json()["detail"] == "Missing bearer token"
        bad = service.client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401, path
    revoke_token(migrate(service.url), "inspector-test")
    service.after_recheck()
    assert service.get("/rules").status_code == 401


def test_the_newest_run_is_read_at_start(service: Service) -> None:
    """The first pages after a start do not wait for the run's worklist to be read."""
    assert service.client.app.state.worklists.runs == ("run-1",)  # type: ignore[attr-defined]


def test_a_revoked_token_is_refused_by_every_operation_once_read_again(service: Service) -> None:
    """Admitted once, a token is not read again for a moment; once it has been, a revoked
    token is refused on every operation."""
    paths = service.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    operations = [(method, path) for path, methods in paths.items() for method in methods if path != "/health"]
    assert len(operations) >= 12
    values = {"nihdi": "11006431003", "case_id": "1", "year": "2024", "name": "a-campaign", "version": "1"}
    bodies = {
        ("post", "/cases"): {"provider_nihdi": "11006431003"},
        ("patch", "/cases/{case_id}"): {"notes": "checked"},
        ("post", "/claims/check"): {"lines": [{}]},
    }
    assert service.get("/rules", role="admin").status_code == 200
    revoke_token(migrate(service.url), "admin-test")
    service.after_recheck()
    headers = {"Authorization": f"Bearer {service.tokens['admin']}"}
    for method, path in operations:
        answer = service.client.request(method, path.format(**values), json=bodies.get((method, path)), headers=headers)
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["detail"] == "Invalid or revoked token"


@pytest.mark.parametrize(
    ("role", "path", "code"),
    [
        ("data_scientist", "/providers/flagged", 200),
        ("data_scientist", "/providers/11006431003/claims", 403),
        ("data_scientist", "/cases", 403),
        ("data_scientist", "/cases/outcomes", 200),
        ("sca", "/providers/flagged", 403),
        ("sca", "/providers/11006431003/claims", 403),
        ("sca", "/rules", 200),
        ("inspector", "/audit", 403),
        ("admin", "/audit", 200),
        ("admin", "/providers/11006431003/claims", 200),
    ],
)
def test_roles_have_least_privilege(service: Service, role: str, path: str, code: int) -> None:
    response = service.get(path, role, **({"purpose": PURPOSE} if path.endswith("/claims") else {}))
    assert response.status_code == code, response.text
    if code == 403:
        assert response.json()["detail"] == f"The role '{role}' may not do this"


def test_flagged_providers_match_the_flags_and_filter(service: Service, results: Published) -> None:
    body = service.get("/providers/flagged", page_size=200).json()
    assert body["run_id"] == "run-1"
    assert body["total"] == results.scores["provider_nihdi"].n_unique()
    by_provider = {i["provider_nihdi"]: i for i in body["items"]}
    expected = results.flags.group_by("provider_nihdi").agg(pl.len(), pl.col("amount_at_stake_eur").sum())
    for nihdi, lines, amount in expected.iter_rows():
        assert by_provider[nihdi]["lines_flagged"] == lines
        assert by_provider[nihdi]["amount_at_stake_eur"] == pytest.approx(amount)
    amounts = [i["amount_at_stake_eur"] for i in body["items"]]
    assert amounts == sorted(amounts, reverse=True)
    assert body["items"][0]["provider_nihdi"] == _top_flagged(results)

    duplicates = service.get("/providers/flagged", rule="DUPLICATE_BILLING").json()
    assert {i["provider_nihdi"] for i in duplicates["items"]} == set(
        results.flags.filter(rule_id="DUPLICATE_BILLING")["provider_nihdi"]
    )
    year = int(results.flags["service_date"].dt.year().min())  # type: ignore[arg-type]
    in_year = set(results.flags.filter(pl.col("service_date").dt.year() == year)["provider_nihdi"])
    assert {
        i["provider_nihdi"] for i in service.get("/providers/flagged", year=year, min_amount=0.01).json()["items"]
    } == in_year
    scored = service.get("/providers/flagged", min_score=0.9, sort="score").json()["items"]
    assert scored
    assert all(i["score"] >= 0.9 for i in scored)
    assert [i["score"] for i in scored] == sorted((i["score"] for i in scored), reverse=True)
    gps = service.get("/providers/flagged", profession="gp", region="WAL", insurer="100").json()["items"]
    assert gps
    assert all(i["profession"] == "gp" and i["region"] == "WAL" and "100" in i["insurers"] for i in gps)
    page_two = service.get("/providers/flagged", page=2, page_size=5).json()
    assert [i["provider_nihdi"] for i in page_two["items"]] == [i["provider_nihdi"] for i in body["items"][5:10]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page_size": 201}, "less than or equal to 200"),
        ({"page": 0}, "greater than or equal to 1"),
        ({"rule": "NOPE"}, "Input should be 'LATE_ATTESTATION', "),
        ({"insurer": "1x0"}, "should match pattern"),
        ({"year": "last"}, "valid integer"),
        ({"sort": "age"}, "'amount', 'score', 'lines', 'persistence' or 'provider'"),
        ({"min_persistence": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_filters_get_a_clear_422(service: Service, params: dict[str, object], message: str) -> None:
    response = service.get("/providers/flagged", **params)
    assert response.status_code == 422
    assert message in response.text


def test_provider_detail_and_claims_with_evidence_are_audited(service: Service, results: Published) -> None:
    nihdi = _top_flagged(results)
    detail = service.get(f"/providers/{nihdi}").json()
    mine = results.flags.filter(provider_nihdi=nihdi)
    assert {r["rule_id"]: r["lines"] for r in detail["flags_by_rule"]} == dict(
        mine.group_by("rule_id").len().iter_rows()
    )
    assert detail["periods"]
    for period in detail["periods"]:  # the peer comparison is what the score is made of
        assert period["explanation"]
        assert sum(c["contribution"] for c in period["peer_comparison"]) == pytest.approx(period["score"], abs=0.01)
    assert set(detail["periods"][0]["profile"]) >= {"lines", "evening_share", "profession"}
    assert detail["cases"] == []

    first = service.get(f"/providers/{nihdi}/claims", page_size=2, purpose=PURPOSE).json()
    assert first["total"] == mine.height
    assert len(first["items"]) == 2
    assert isinstance(first["items"][0]["evidence"], dict)
    log = service.get("/audit", "admin", action="read_claims").json()
    assert log["total"] == 1
    entry = log["items"][0]
    assert (entry["actor"], entry["role"], entry["provider_nihdi"]) == ("inspector-test", "inspector", nihdi)
    assert entry["detail"]["claims"] == [i["claim_id"] for i in first["items"]]
    assert entry["detail"]["purpose"] == PURPOSE

    assert service.get("/providers/99999999999").status_code == 404
    assert "is not in run" in service.get("/providers/99999999999/claims", purpose=PURPOSE).json()["detail"]
    assert service.get("/providers/12AB").status_code == 422
    assert service.get("/providers/flagged", run_id="nope").status_code == 404


def test_case_lifecycle_history_outcomes_and_audit(service: Service, results: Published) -> None:
    nihdi = _top_flagged(results)
    opened = service.send("post", "/cases", provider_nihdi=nihdi, notes="Evening visits typed at 22:00")
    assert opened.status_code == 201, opened.text
    case = opened.json()
    assert (case["status"], case["opened_by"]) == ("open", "inspector-test")
    path = f"/cases/{case['id']}"

    assert service.send("patch", path, status="closed").status_code == 422  # needs an outcome
    assert service.send("patch", path, outcome="confirmed").status_code == 422  # only when closing
    assert service.send("patch", path, status="investigating").json()["status"] == "investigating"
    back = service.send("patch", path, status="open")
    assert back.status_code == 409
    assert "cannot go from 'investigating' to 'open'" in back.json()["detail"]
    closed = service.send(
        "patch", path, "admin", status="closed", outcome="confirmed", amount_to_recover_eur=243.5
    ).json()
    assert (closed["status"], closed["outcome"], closed["amount_to_recover_eur"]) == ("closed", "confirmed", 243.5)
    assert [(e["author"], e["change"].get("status")) for e in closed["history"]] == [
        ("inspector-test", [None, "open"]),
        ("inspector-test", ["open", "investigating"]),
        ("admin-test", ["investigating", "closed"]),
    ]
    assert service.send("patch", path, notes="late").status_code == 409
    outcomes = service.get("/cases/outcomes", "sca").json()
    assert [(o["provider_nihdi"], o["outcome"], o["amount_to_recover_eur"]) for o in outcomes] == [
        (nihdi, "confirmed", 243.5)
    ]
    pseudonymous = service.get("/cases/outcomes", "data_scientist").json()
    assert [o["provider_nihdi"] for o in pseudonymous] == [pseudonym(nihdi, get_settings().pseudonym_secret)]
    actions = [e["action"] for e in service.get("/audit", "admin", page_size=50).json()["items"]]
    assert actions.count("change_case") == 2
    assert actions.count("open_case") == 1
    assert service.send("post", "/cases", provider_nihdi="99999999999").status_code == 404
    assert service.get("/cases/4242").status_code == 404
    assert service.get("/cases", status="closed").json()["total"] == 1


def test_claim_lines_are_read_for_a_case_or_a_stated_purpose(service: Service, results: Published) -> None:
    nihdi = _top_flagged(results)
    other = results.flags.filter(pl.col("provider_nihdi") != nihdi)["provider_nihdi"][0]
    bare = service.get(f"/providers/{nihdi}/claims")
    assert bare.status_code == 403
    assert "give case_id" in bare.json()["detail"]
    assert service.get(f"/providers/{nihdi}/claims", purpose="why").status_code == 422  # too short to say why
    mine = service.send("post", "/cases", provider_nihdi=nihdi).json()["id"]
    theirs = service.send("post", "/cases", "admin", provider_nihdi=nihdi).json()["id"]
    elsewhere = service.send("post", "/cases", provider_nihdi=other).json()["id"]
    assert service.get(f"/providers/{nihdi}/claims", case_id=mine).status_code == 200
    refused = service.get(f"/providers/{nihdi}/claims", case_id=theirs)
    assert refused.status_code == 403
    assert refused.json()["detail"] == f"You do not work on case {theirs}"
    assert service.get(f"/providers/{nihdi}/claims", case_id=elsewhere).status_code == 403
    assert service.get(f"/providers/{nihdi}/claims", case_id=4242).status_code == 404
    service.send("patch", f"/cases/{theirs}", notes="taken over")  # working on it makes it theirs too
    assert service.get(f"/providers/{nihdi}/claims", case_id=theirs).status_code == 200
    reads = service.get("/audit", "admin", action="read_claims").json()["items"]
    assert sorted(r["case_id"] for r in reads) == sorted([mine, theirs])
    assert all(r["provider_nihdi"] == nihdi for r in reads)


def test_a_case_keeps_what_prompted_it_whatever_later_runs_say(service: Service, results: Published) -> None:
    nihdi = _top_flagged(results)
    case = service.send("post", "/cases", provider_nihdi=nihdi).json()
    record = case["decision_record"]
    assert (record["run_id"], record["catalog_version"]) == ("run-1", load_catalog().version)
    assert record["model"]["model"] == "peer_evidence"
    mine = results.flags.filter(provider_nihdi=nihdi)
    assert sorted((f["claim_id"], f["rule_id"]) for f in record["flags"]) == sorted(
        mine.select("claim_id", "rule_id").iter_rows()
    )
    assert all(isinstance(f["evidence"], dict) for f in record["flags"])
    scores = results.scores.filter(provider_nihdi=nihdi).sort("period")
    assert [s["period"] for s in record["scores"]] == scores["period"].to_list()
    assert [s["explanation"] for s in record["scores"]] == scores["explanation"].to_list()
    # A later run that no longer flags the provider leaves the record as it was.
    replace(results, flags=results.flags.filter(pl.col("provider_nihdi") != nihdi)).into(
        service.url, run_id="run-2", created_at="2026-02-01T00:00:00+00:00"
    )
    assert service.get(f"/cases/{case['id']}").json()["decision_record"] == record
    assert "decision_record" not in service.get("/cases").json()["items"][0]


def test_the_graduated_response_climbs_a_ladder_and_the_report_counts_it(service: Service, results: Published) -> None:
    case = service.send("post", "/cases", provider_nihdi=_top_flagged(results)).json()
    path = f"/cases/{case['id']}/actions"
    year = (date.today() - timedelta(days=60)).year  # so that every date below is past
    assert service.send("post", path, action="sensitisation", taken_on=f"{year}-01-10").status_code == 201
    assert service.send("post", path, action="warning", taken_on=f"{year}-01-09").status_code == 409  # back in time
    assert (
        service.send("post", path, action="warning", taken_on=f"{year}-02-01", note="second letter").status_code == 201
    )
    down = service.send("post", path, action="sensitisation", taken_on=f"{year}-02-02")
    assert down.status_code == 409
    assert "does not go back to 'sensitisation'" in down.json()["detail"]
    assert service.send("post", path, action="sanction", taken_on=f"{year}-02-03").status_code == 422  # no amount
    assert service.send("post", path, action="warning", taken_on=f"{year}-02-03", amount_eur=5).status_code == 422
    future = (date.today() + timedelta(days=2)).isoformat()
    assert service.send("post", path, action="official_report", taken_on=future).status_code == 422
    assert service.send("post", path, action="official_report", taken_on=f"{year}-01-15").status_code == 409
    assert service.send("post", path, action="official_report", taken_on=f"{year}-02-03").status_code == 201
    done = service.send("post", path, "admin", action="sanction", taken_on=f"{year}-02-03", amount_eur=1500)
    assert done.status_code == 201, done.text
    steps = [(a["action"], a["author"], a["amount_eur"]) for a in done.json()["actions"]]
    assert steps == [
        ("sensitisation", "inspector-test", None),
        ("warning", "inspector-test", None),
        ("official_report", "inspector-test", None),
        ("sanction", "admin-test", 1500.0),
    ]
    assert done.json()["history"][-1]["change"]["action"] == [None, "sanction"]
    audited = [e["action"] for e in service.get("/audit", "admin", page_size=50).json()["items"]]
    assert audited.count("case_action") == 4
    cases = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()["cases"]
    assert {k: cases[k] for k in ("sensitisations", "warnings", "official_reports", "sanctions")} == dict.fromkeys(
        ("sensitisations", "warnings", "official_reports", "sanctions"), 1
    )
    assert cases["sanctions_eur"] == 1500.0
    assert service.get(f"/reports/annual/{year - 1}", "sca", suppress=False).json()["cases"]["sanctions"] == 0


def test_runs_are_visible_only_complete_and_newest_first(service: Service, results: Published) -> None:
    engine = migrate(service.url)
    with engine.begin() as connection:
        connection.execute(
            t.runs.insert().values(
                run_id="half-loaded",
                created_at=sa.func.now(),
                published_at=sa.func.now(),
                dataset="x",
                legislation="current",
                status="loading",
                info={},
            )
        )
    assert [r["run_id"] for r in service.get("/runs").json()] == ["run-1"]
    assert service.get("/providers/flagged").json()["run_id"] == "run-1"
    results.into(service.url, run_id="run-2", created_at="2026-02-01T00:00:00+00:00")
    assert [r["run_id"] for r in service.get("/runs").json()] == ["run-2", "run-1"]
    service.after_recheck()  # the newest run is read with the token
    assert service.get("/providers/flagged").json()["run_id"] == "run-2"
    assert service.get("/providers/flagged", run_id="run-1").json()["run_id"] == "run-1"
    with pytest.raises(sa.exc.IntegrityError):
        results.into(service.url, run_id="run-2")  # a failed publication leaves nothing behind
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(t.flags)).scalar_one()
    assert count == 2 * results.flags.height


def test_unknown_fields_in_a_body_are_rejected_not_ignored(service: Service) -> None:
    nihdi = service.get("/providers/flagged").json()["items"][0]["provider_nihdi"]
    answer = service.send("POST", "/cases", provider_nihdi=nihdi, note="a typo for notes")
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "note"]
    assert service.get("/cases").json()["total"] == 0


def test_worklist_filters_and_sorts_on_persistence(service: Service, results: Published) -> None:
    latest = (
        results.scores.sort("period")
        .group_by("provider_nihdi")
        .agg(pl.col("top_decile_streak").last())
        .filter(pl.col("top_decile_streak") >= 2)
    )
    assert latest.height > 0  # the synthetic anomalies stay at the top both years
    persistent = service.get("/providers/flagged", min_persistence=2, sort="persistence", page_size=200).json()
    assert persistent["total"] == latest.height
    assert {i["provider_nihdi"] for i in persistent["items"]} == set(latest["provider_nihdi"])
    everyone = service.get("/providers/flagged", sort="persistence", page_size=200).json()["items"]
    streaks = [i["persistence"] for i in everyone]
    assert streaks == sorted(streaks, reverse=True)
    first = persistent["items"][0]["provider_nihdi"]
    page = service.get(f"/providers/{first}").json()
    assert page["persistence"] >= 2
    assert [p["top_decile_streak"] for p in page["periods"]][-1] == page["persistence"]


def test_reads_of_cases_and_of_the_audit_log_and_refusals_are_audited(service: Service, results: Published) -> None:
    nihdi = _top_flagged(results)
    case = service.send("post", "/cases", provider_nihdi=nihdi).json()
    assert service.get("/cases").status_code == 200
    assert service.get(f"/cases/{case['id']}").status_code == 200
    assert service.get("/cases/outcomes", "data_scientist").status_code == 200
    assert service.get("/cases", "sca").status_code == 403
    assert service.client.get("/cases", headers={"Authorization": "Bearer stolen"}).status_code == 401
    assert service.client.get("/audit").status_code == 401
    assert service.get("/audit", "admin").status_code == 200
    log = service.get("/audit", "admin", page_size=200).json()["items"]
    by_action: dict[str, list[dict]] = {}
    for entry in log:
        by_action.setdefault(entry["action"], []).append(entry)
    assert by_action["list_cases"][0]["detail"]["cases"] == [case["id"]]
    assert by_action["read_case"][0]["case_id"] == case["id"]
    assert by_action["read_case"][0]["provider_nihdi"] == nihdi
    assert by_action["read_outcomes"][0]["actor"] == "data_scientist-test"
    assert by_action["read_audit"]  # the read this page answers was recorded before it
    refusals = {(e["actor"], e["detail"]["status"], e["detail"]["path"]) for e in by_action["refused"]}
    assert refusals >= {("sca-test", 403, "/cases"), ("unknown", 401, "/cases"), ("unknown", 401, "/audit")}
    assert all("stolen" not in str(e) for e in log)


def test_the_audit_log_is_append_only_in_the_database(service: Service) -> None:
    assert service.get("/cases").status_code == 200  # one entry at least
    engine = migrate(service.url)
    for change in (t.audit_log.update().values(actor="someone else"), t.audit_log.delete()):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(change)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(t.audit_log)).scalar_one() >= 1


def test_a_data_scientist_sees_and_gives_keyed_pseudonyms_only(service: Service) -> None:
    inspector = service.get("/providers/flagged", sort="score", page_size=200).json()
    scientist = service.get("/providers/flagged", "data_scientist", sort="score", page_size=200).json()
    assert scientist["total"] == inspector["total"] > 0
    key = get_settings().pseudonym_secret
    numbers = [p["provider_nihdi"] for p in inspector["items"]]
    assert [p["provider_nihdi"] for p in scientist["items"]] == [pseudonym(n, key) for n in numbers]
    assert all(p["provider_nihdi"].startswith("PS") and len(p["provider_nihdi"]) == 22 for p in scientist["items"])
    # Keyed: another key gives other pseudonyms, so nobody recomputes them from the numbers.
    assert pseudonym(numbers[0], b"another key") != pseudonym(numbers[0], key)
    assert numbers[0] not in service.get("/providers/flagged", "data_scientist", sort="provider").text

    alias = pseudonym(numbers[0], key)
    page = service.get(f"/providers/{alias}", "data_scientist")
    assert page.status_code == 200, page.text
    assert page.json()["provider_nihdi"] == alias
    assert numbers[0] not in page.text
    assert "cases" not in page.json()
    assert page.json()["periods"] == service.get(f"/providers/{numbers[0]}").json()["periods"]
    refused = service.get(f"/providers/{numbers[0]}", "data_scientist")
    assert refused.status_code == 404
    assert numbers[0] in refused.json()["detail"]  # the number they gave, and nothing more
    # An inspector acts on a lead passed on by its pseudonym, and sees whom it names.
    lead = service.get(f"/providers/{alias}")
    assert lead.status_code == 200
    assert lead.json()["provider_nihdi"] == numbers[0]
    assert service.get(f"/providers/PS{'0' * 20}").status_code == 404
    assert service.get("/providers/PS123").status_code == 422

"""The workbench over real HTTP through the app: sign-in, worklist, provider, cases, languages."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.auth import revoke_token
from api.database import migrate
from tests.api.conftest import Published, Service

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def _browser(service: Service, lang: str = "fr") -> TestClient:
    """A client of the same app with its own cookie jar, as a second browser would be."""
    client = TestClient(service.client.app, headers={"Accept-Language": f"{lang}-BE,{lang};q=0.9,en;q=0.5"})
    client.__enter__()
    return client


def _sign_in(client: TestClient, token: str) -> None:
    form = client.get("/signin")
    answer = client.post(
        "/signin", data={"token": token, "csrf": CSRF.search(form.text).group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/workbench/worklist"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert token not in cookie


def test_sign_in_needs_a_valid_token_and_the_forms_own_token(service: Service) -> None:
    browser = _browser(service, "nl")
    first = browser.get("/", follow_redirects=False)
    assert (first.status_code, first.headers["location"]) == (303, "/signin")
    form = browser.get("/signin")
    assert '<html lang="nl">' in form.text
    assert "Aanmelden" in form.text
    assert "script" not in form.text.lower()
    assert "form-action 'self'" in form.headers["content-security-policy"]
    csrf = CSRF.search(form.text).group(1)
    forged = browser.post("/signin", data={"token": service.tokens["inspector"], "csrf": "0" * 64})
    assert forged.status_code == 403
    wrong = browser.post("/signin", data={"token": "secm_nothing", "csrf": csrf}, follow_redirects=True)
    assert "Aanmelden geweigerd" in wrong.text
    assert browser.get("/workbench/worklist", follow_redirects=False).headers["location"] == "/signin"
    _sign_in(browser, service.tokens["inspector"])
    assert browser.get("/workbench/worklist").status_code == 200


def test_worklist_filters_sort_and_page_like_the_api(service: Service) -> None:
    browser = _browser(service, "fr")
    _sign_in(browser, service.tokens["inspector"])
    page = browser.get("/workbench/worklist")
    api = service.get("/providers/flagged", page_size=200).json()
    assert f"{api['total']} prestataires correspondent aux filtres" in page.text
    assert "Liste de travail" in page.text
    rule = "LATE_ATTESTATION"
    filtered = browser.get("/workbench/worklist", params={"rule": rule, "sort": "score", "order": "desc"})
    expected = service.get("/providers/flagged", rule=rule, sort="score", order="desc", page_size=25).json()
    assert f"{expected['total']} prestataires" in filtered.text
    shown = re.findall(r'<td><a href="/workbench/providers/([0-9]{11})">', filtered.text)
    assert shown == [p["provider_nihdi"] for p in expected["items"]]
    # Amounts in the Belgian format, and the filters kept in the sorting links: a URL to share.
    assert re.search(r"[0-9],[0-9]{2}\xa0€", filtered.text)
    assert (
        "rule=LATE_ATTESTATION" in re.findall(r'href="(/workbench/worklist\?[^"]*sort=amount[^"]*)"', filtered.text)[0]
    )
    english = browser.get("/workbench/worklist", params={"lang": "en"})
    assert "Worklist" in english.text
    assert "providers match the filters" in english.text
    assert "Worklist" in browser.get("/workbench/worklist").text  # the choice is kept


def test_provider_page_and_a_case_from_open_to_closed(service: Service, results: Published) -> None:
    browser = _browser(service, "nl")
    _sign_in(browser, service.tokens["inspector"])
    nihdi = service.get("/providers/flagged", sort="amount").json()["items"][0]["provider_nihdi"]
    page = browser.get(f"/workbench/providers/{nihdi}")
    assert page.status_code == 200
    catalog_titles = {r["rule_id"]: r["titles"]["nl"] for r in service.get("/rules").json()}
    view = service.get(f"/providers/{nihdi}").json()
    for rule in view["flags_by_rule"]:
        assert catalog_titles[rule["rule_id"]] in page.text
    assert page.text.count("<svg") >= 5  # a chart per indicator against the peers
    csrf = CSRF.search(page.text).group(1)
    refused = browser.post("/workbench/cases", data={"provider_nihdi": nihdi, "csrf": "bad"})
    assert refused.status_code == 403
    opened = browser.post("/workbench/cases", data={"provider_nihdi": nihdi, "csrf": csrf, "notes": "te bekijken"})
    assert opened.status_code == 200
    case_id = int(re.search(r"Dossier #([0-9]+)", opened.text).group(1))
    assert "open" in opened.text
    moved = browser.post(f"/workbench/cases/{case_id}", data={"csrf": csrf, "status": "investigating"})
    assert "in onderzoek" in moved.text
    missing = browser.post(f"/workbench/cases/{case_id}", data={"csrf": csrf, "status": "closed"})
    assert "Closing a case needs an outcome" in missing.text
    closed = browser.post(
        f"/workbench/cases/{case_id}",
        data={"csrf": csrf, "status": "closed", "outcome": "confirmed", "amount_to_recover_eur": "120,50"},
    )
    assert "afgesloten" in closed.text
    assert "120,50\xa0€" in closed.text
    case = service.get(f"/cases/{case_id}").json()
    assert (case["status"], case["outcome"], case["amount_to_recover_eur"]) == ("closed", "confirmed", 120.5)
    assert [e["author"] for e in case["history"]] == ["inspector-test"] * 3
    actions = [e["action"] for e in service.get("/audit", "admin", page_size=100).json()["items"]]
    assert actions.count("change_case") == 2
    assert "open_case" in actions


def test_the_peer_charts_are_images_of_the_peer_group_in_the_pages_language(service: Service) -> None:
    """The provider page draws only the provider's line; the peers' chart is an image of the
    group (no provider in it, the same for every member) that the browser may keep."""
    browser = _browser(service, "nl")
    _sign_in(browser, service.tokens["inspector"])
    nihdi = service.get("/providers/flagged", sort="amount").json()["items"][0]["provider_nihdi"]
    page = browser.get(f"/workbench/providers/{nihdi}").text
    images = re.findall(r'<image href="([^"]+)"', page)
    assert len(images) == page.count('class="provider"') >= 5
    for href in images:
        chart = browser.get(href.replace("&amp;", "&"))
        assert chart.status_code == 200, href
        assert chart.headers["content-type"].startswith("image/svg+xml")
        assert "max-age" in chart.headers["cache-control"]
        assert 'class="provider"' not in chart.text
        assert nihdi not in chart.text
    shares = [h for h in images if "_share.svg" in h]
    assert shares
    assert re.search(r">[0-9]+,[0-9]\u00a0%<", browser.get(shares[0].replace("&amp;", "&")).text)
    base = images[0].replace("&amp;", "&")
    assert browser.get(re.sub(r"/[a-z_]+\.svg", "/no_such_indicator.svg", base)).status_code == 404
    assert browser.get(re.sub(r"group=[^&]+", "group=nobody", base)).status_code == 404
    assert _browser(service).get(base, follow_redirects=False).status_code == 303  # signed in only


def test_roles_pseudonyms_sign_out_and_revocation(service: Service) -> None:
    scientist = _browser(service, "en")
    _sign_in(scientist, service.tokens["data_scientist"])
    page = scientist.get("/workbench/worklist")
    assert re.findall(r'href="/workbench/providers/(PS[0-9a-f]{20})"', page.text)
    assert not re.findall(r'href="/workbench/providers/([0-9]{11})"', page.text)
    assert 'href="/workbench/cases"' not in page.text
    assert scientist.get("/workbench/cases").status_code == 403
    alias = re.findall(r'href="/workbench/providers/(PS[0-9a-f]{20})"', page.text)[0]
    assert scientist.get(f"/workbench/providers/{alias}").status_code == 200

    sca = _browser(service, "en")
    _sign_in(sca, service.tokens["sca"])
    assert sca.get("/workbench/worklist").status_code == 403

    csrf = CSRF.search(page.text).group(1)
    out = scientist.post("/signout", data={"csrf": csrf}, follow_redirects=False)
    assert out.headers["location"] == "/signin"
    assert scientist.get("/workbench/worklist", follow_redirects=False).status_code == 303

    inspector = _browser(service, "en")
    _sign_in(inspector, service.tokens["inspector"])
    revoke_token(migrate(service.url), "inspector-test")
    service.after_recheck()
    assert inspector.get("/workbench/worklist", follow_redirects=False).headers["location"] == "/signin"


@pytest.mark.parametrize(
    "path", ["/workbench/worklist", "/workbench/cases", "/workbench/cases/1", "/workbench/providers/11006431003"]
)
def test_pages_without_a_session_send_to_sign_in(service: Service, path: str) -> None:
    answer = _browser(service).get(path, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")


def test_claim_lines_are_read_for_a_case_or_a_purpose_and_audited(service: Service) -> None:
    browser = _browser(service, "en")
    _sign_in(browser, service.tokens["inspector"])
    nihdi = service.get("/providers/flagged", sort="lines").json()["items"][0]["provider_nihdi"]
    path = f"/workbench/providers/{nihdi}/claims"
    asked = browser.get(path)
    assert asked.status_code == 200
    assert "inspection task" in asked.text
    assert "<table" not in asked.text  # no line before a reason is given
    short = browser.get(path, params={"purpose": "look"})
    assert "at least 10 characters" in short.text
    purpose = "preliminary look at a lead"
    lines = browser.get(path, params={"purpose": purpose})
    expected = service.get(f"/providers/{nihdi}/claims", purpose=purpose, page_size=50).json()
    assert f"{expected['total']} flagged lines" in lines.text
    for item in expected["items"]:
        assert item["claim_id"] in lines.text
    audit = service.get("/audit", "admin", action="read_claims", page_size=10).json()["items"]
    assert [e["detail"]["purpose"] for e in audit[:2]] == [purpose, purpose]  # the page's read, then the API's
    assert audit[1]["actor"] == "inspector-test"

    scientist = _browser(service, "en")
    _sign_in(scientist, service.tokens["data_scientist"])
    forbidden = scientist.get(path, params={"purpose": purpose})
    assert forbidden.status_code == 403
    assert "does not give access" in forbidden.text
    assert nihdi not in forbidden.text.split("<main>")[1]

"""The workbench in a real browser (Debian's Chromium, driven by Playwright) against a real
``secm serve``: an inspector signs in, filters the worklist, opens a provider, sees the
evidence and the peer charts, opens a case and closes it, switches language and signs out; a
data scientist is refused claim lines; a form posted without its CSRF token is refused. The
main pages pass axe-core's accessibility rules, and are photographed at 1280×800 into
``tests/web/screenshots/`` (not kept by git).

Chromium is installed by ``make test`` (``make browser``); without it these tests skip, unless
``SECM_REQUIRE_BROWSER`` is set (CI), which makes that a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.auth import create_token
from api.database import migrate
from bench.service import serving
from rules import load_catalog
from tests.api.conftest import Published

CHROMIUM = Path(os.environ.get("SECM_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).parent / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}


def accessible(page: Any, name: str) -> None:
    """Photograph the page, and fail on any serious or critical axe-core violation."""
    from axe_playwright_python.sync_playwright import Axe

    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    violations = Axe().run(page).response["violations"]
    serious = [(v["id"], v["help"], len(v["nodes"])) for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{name}: {serious}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (make browser installs Debian's)"
        if os.environ.get("SECM_REQUIRE_BROWSER"):
            pytest.fail(f"SECM_REQUIRE_BROWSER is set but there is {message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Chromium's sandbox needs user namespaces a container (or root) may not have.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(results: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """One ``secm serve`` for the module's tests, over a published run, with an inspector's
    and a data scientist's tokens."""
    home = tmp_path_factory.mktemp("secm-home")
    url = f"sqlite:///{home}/secm.db"
    results.into(url)
    engine = migrate(url)
    token = create_token(engine, "inspector", "ines")[1]
    scientist = create_token(engine, "data_scientist", "dana")[1]
    with (home / "serve.log").open("w") as log, serving(str(home), url, log=log) as (base, _):
        yield base, token, scientist


def _sign_in(page: Any, base: str, token: str) -> None:
    page.goto(base + "/")
    assert page.url == base + "/signin"
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")


def test_an_inspector_works_a_lead_from_the_worklist_to_a_closed_case(
    browser: Any, served: tuple[str, str, str]
) -> None:
    base, token, _ = served
    # Axe's script is injected by the test, which the pages' policy (no script at all) forbids.
    context = browser.new_context(locale="nl-BE", viewport=VIEWPORT, bypass_csp=True)
    page = context.new_page()
    page.goto(base + "/")
    assert page.url == base + "/signin"
    assert page.locator("html").get_attribute("lang") == "nl"
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    assert page.url.startswith(base + "/workbench/worklist")
    assert page.locator("#count").count() == 1, page.content()[:3000]
    count = page.locator("#count").inner_text()
    accessible(page, "worklist")
    assert "zorgverleners voldoen aan de filters" in count

    page.select_option("select[name=rule]", "LATE_ATTESTATION")
    page.click("form.filters button[type=submit]")
    assert "rule=LATE_ATTESTATION" in page.url
    filtered = int(re.sub(r"[^0-9]", "", page.locator("#count").inner_text()))
    assert 0 < filtered <= int(re.sub(r"[^0-9]", "", count))
    page.click("#worklist thead a:has-text('Score')")
    assert "sort=score" in page.url
    assert "rule=LATE_ATTESTATION" in page.url  # the filters stay in the shared URL
    scores = [
        float(s.replace(".", "").replace(",", "."))
        for s in page.locator("#worklist tbody td:nth-child(6)").all_inner_texts()
        if s
    ]
    assert scores == sorted(scores, reverse=True)

    charts: list[Any] = []
    page.on("response", lambda answer: charts.append(answer) if "/workbench/charts/" in answer.url else None)
    page.click("#worklist tbody tr:first-child td:first-child a")
    assert "/workbench/providers/" in page.url
    page.wait_for_load_state("load")
    assert page.locator("#indicators svg").count() == page.locator("#indicators line.provider").count() >= 5
    # The peers' charts are images of the service: the page's policy lets them in.
    assert len(charts) == page.locator("#indicators image").count()
    assert all(c.status == 200 and c.header_value("content-type").startswith("image/svg") for c in charts)
    page.locator("#indicators").screenshot(path=str(SCREENSHOTS / "indicators.png"))
    assert load_catalog().rule("LATE_ATTESTATION").titles["nl"] in page.locator("#rules").inner_text()
    accessible(page, "provider")
    provider = page.url
    page.click("#see-lines")
    page.fill("#purpose input[name=purpose]", "voorafgaand onderzoek van een spoor")
    page.click("#purpose button")
    page.wait_for_load_state("load")  # on a busy machine the rows were counted before they came
    assert page.locator("#claims tbody tr").count() >= 1
    assert "LATE_ATTESTATION" not in page.locator("#claims").inner_text()  # titles, not ids
    assert page.locator("#claims tbody tr:first-child td:nth-child(6)").inner_text().strip()  # the evidence
    page.goto(provider)
    page.fill("#open-case input[name=notes]", "Te bekijken")
    page.click("#open-case button")
    assert re.search(r"/workbench/cases/[0-9]+$", page.url)
    assert "open" in page.locator("#state").inner_text()
    page.click("#move button[value=investigating]")
    assert "in onderzoek" in page.locator("#state").inner_text()
    page.select_option("#close select[name=outcome]", "confirmed")
    page.fill("#close input[name=amount_to_recover_eur]", "1234,5")
    page.click("#close button[type=submit]")
    state = page.locator("#state").inner_text()
    assert "afgesloten" in state
    assert "1.234,50\xa0€" in state or "1.234,50 €" in state
    assert page.locator("#history tbody tr").count() == 3
    accessible(page, "case")

    page.click("nav.lang a[hreflang=en]")
    assert "closed" in page.locator("#state").inner_text()
    page.click("header button[type=submit]")
    assert page.url == base + "/signin"
    page.goto(base + "/workbench/worklist")
    assert page.url == base + "/signin"
    context.close()


def test_a_data_scientist_is_refused_claim_lines_and_a_form_without_csrf_is_refused(
    browser: Any, served: tuple[str, str, str]
) -> None:
    base, token, scientist = served
    context = browser.new_context(locale="en-GB", viewport=VIEWPORT)
    page = context.new_page()
    _sign_in(page, base, scientist)
    first = page.locator("#worklist tbody tr:first-child td:first-child a")
    alias = first.inner_text()
    assert re.fullmatch(r"PS[0-9a-f]{20}", alias)
    first.click()
    assert page.locator("#see-lines").count() == 0
    answer = page.goto(base + "/workbench/providers/11006431003/claims?purpose=looking+at+it+closely")
    assert answer.status == 403
    assert "does not give access" in page.locator("main").inner_text()
    context.close()

    inspector = browser.new_context(locale="en-GB", viewport=VIEWPORT)
    page = inspector.new_page()
    _sign_in(page, base, token)
    forged = page.request.post(base + "/workbench/cases", form={"provider_nihdi": "11006431003", "notes": "x"})
    assert forged.status == 403
    posted = page.request.post(
        base + "/workbench/cases", form={"provider_nihdi": "11006431003", "notes": "x", "csrf": "0" * 64}
    )
    assert posted.status == 403
    inspector.close()

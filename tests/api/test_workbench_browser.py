"""The workbench in a real browser (Debian's Chromium, driven by Playwright) against a real
``secm serve``: an inspector signs in, filters the worklist, opens a provider, opens a case and
closes it, switches language and signs out.

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
from secm.settings import get_settings
from tests.api.conftest import Published

CHROMIUM = Path(os.environ.get("SECM_CHROMIUM", "/usr/bin/chromium"))


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


@pytest.fixture
def served(results: Published, tmp_path: Path) -> Iterator[tuple[str, str]]:
    home = str(get_settings().resolved_home)
    url = f"sqlite:///{home}/secm.db"
    results.into(url)
    token = create_token(migrate(url), "inspector", "ines")[1]
    with (tmp_path / "serve.log").open("w") as log, serving(home, url, log=log) as (base, _):
        yield base, token


def test_an_inspector_works_a_lead_from_the_worklist_to_a_closed_case(browser: Any, served: tuple[str, str]) -> None:
    base, token = served
    context = browser.new_context(locale="nl-BE")
    page = context.new_page()
    page.goto(base + "/")
    assert page.url == base + "/signin"
    assert page.locator("html").get_attribute("lang") == "nl"
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    assert page.url.startswith(base + "/workbench/worklist")
    assert page.locator("#count").count() == 1, page.content()[:3000]
    count = page.locator("#count").inner_text()
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

    page.click("#worklist tbody tr:first-child td:first-child a")
    assert "/workbench/providers/" in page.url
    assert page.locator("#indicators svg").count() >= 5
    assert load_catalog().rule("LATE_ATTESTATION").titles["nl"] in page.locator("#rules").inner_text()
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

    page.click("nav.lang a[hreflang=en]")
    assert "closed" in page.locator("#state").inner_text()
    page.click("header button[type=submit]")
    assert page.url == base + "/signin"
    page.goto(base + "/workbench/worklist")
    assert page.url == base + "/signin"
    context.close()

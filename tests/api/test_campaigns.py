"""Sensitisation campaigns: selection, matched comparison, letters, and an impact estimate that
recovers an effect the generator simulated (and finds none where there is none)."""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.auth import create_token
from api.campaigns import CampaignError, campaign, create_campaign, impact
from api.database import engine_for, migrate
from secm.cli import app
from secm.pipeline import run
from secm.synth import generate, lines_for_practice
from secm.synth.campaigns import respond_to_letters
from tests.api.conftest import Service

NAME = "late-nurses-2023"
CRITERIA = ["--rule", "LATE_ATTESTATION", "--profession", "nurse", "--channel", "efact", "--period", "2023"]
MIN_SHARE, MIN_LINES = 0.05, 10


@dataclass(frozen=True)
class Campaign:
    data: Path
    url: str
    letters: Path
    first_run: str
    created: str  # what the command printed


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    """Two years of billing by 2 500 providers, published; a campaign on 2023's late eFact nurses."""
    root = tmp_path_factory.mktemp("campaign")
    data = root / "data"
    generate(data, n_lines=lines_for_practice(2500, 20, 2), seed=3, n_providers=2500, years=2)
    url = f"sqlite:///{root / 'app.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SECM_HOME", str(root / "home"))
        env.setenv("SECM_DATABASE_URL", url)
        first = run(data, root / "out-1", publish_to=url).info["run_id"]
        letters = root / "letters"
        args = ["campaign", "create", "--name", NAME, *CRITERIA, "--min-share", str(MIN_SHARE)]
        args += ["--min-lines", str(MIN_LINES), "--letters", str(letters), "--by", "inspector-a"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        yield Campaign(data, url, letters, str(first), done.output)


def _members(launched: Campaign) -> pl.DataFrame:
    with engine_for(launched.url).connect() as connection:
        return pl.DataFrame(campaign(connection, NAME)["providers"])


def test_selection_pairs_alike_providers_and_writes_letters_to_the_contacted(launched: Campaign) -> None:
    members = _members(launched)
    contacted = members.filter(pl.col("arm") == "contacted")
    assert members.height >= 20
    assert (members["profession"] == "nurse").all()
    assert ((members["flagged"] / members["lines"] >= MIN_SHARE) & (members["lines"] >= MIN_LINES)).all()
    # One contacted and one comparison per pair; an odd one out is contacted.
    per_pair = members.group_by("pair").agg(pl.len(), (pl.col("arm") == "contacted").sum().alias("contacted"))
    assert (per_pair["contacted"] == 1).all()
    assert per_pair["len"].is_in([1, 2]).all()
    assert (per_pair["len"] == 1).sum() <= 1
    assert f"{contacted.height} providers contacted" in launched.created

    letters = sorted(launched.letters.glob("*.html"))
    assert {p.stem for p in letters} == set(contacted["provider_nihdi"])
    patients = (
        pl.scan_parquet(launched.data / "billing_lines" / "*.parquet")
        .select("patient_id")
        .unique()
        .drop_nulls()
        .collect()
    )
    for member in contacted.iter_rows(named=True):
        text = (launched.letters / f"{member['provider_nihdi']}.html").read_text(encoding="utf-8")
        assert f'<html lang="{member["language"]}">' in text
        share = 100 * member["flagged"] / member["lines"]
        if member["language"] in ("fr", "nl"):
            assert f"{share:.1f}".replace(".", ",") + "\u00a0%" in text  # Belgian format
            assert re.search(r"\d{2}/\d{2}/\d{4}", text)
        heading = {"fr": "Votre facturation", "nl": "Uw facturatie", "en": "Your billing"}[member["language"]]
        assert heading in text
        assert not [p for p in patients["patient_id"] if p in text]
    assert set(contacted["language"]) >= {"fr", "nl"}


def test_no_letter_means_no_effect(launched: Campaign) -> None:
    with engine_for(launched.url).connect() as connection:
        measured = impact(connection, campaign(connection, NAME), launched.first_run)
    overall = measured["groups"][0]
    assert measured["after_periods"] == ["2024"]
    assert overall["ci_low"] < 0 < overall["ci_high"]


def test_the_impact_estimate_recovers_the_simulated_effect(launched: Campaign, tmp_path: Path) -> None:
    contacted = _members(launched).filter(pl.col("arm") == "contacted")["provider_nihdi"].to_list()
    data = tmp_path / "data"
    shutil.copytree(launched.data, data)  # a copy: the module's other tests see the data unchanged
    changed = respond_to_letters(data, contacted, after=date(2024, 1, 1), response=0.8, seed=1)
    assert changed > 0
    later = str(run(data, tmp_path / "out", publish_to=launched.url).info["run_id"])
    with engine_for(launched.url).connect() as connection:
        measured = impact(connection, campaign(connection, NAME), later)["groups"][0]
        unchanged = impact(connection, campaign(connection, NAME), launched.first_run)["groups"][0]
    # The effect the generator made: how much the contacted's 2024 share fell, all else equal.
    simulated = measured["contacted_after"] - unchanged["contacted_after"]
    assert simulated < -0.05
    assert measured["comparison_after"] == pytest.approx(unchanged["comparison_after"])
    assert measured["ci_low"] <= simulated <= measured["ci_high"]
    assert measured["ci_high"] < 0  # the campaign worked, and the interval says so


def test_campaigns_over_http_for_inspectors_and_the_sca(launched: Campaign) -> None:
    engine = migrate(launched.url)
    tokens = {
        role: create_token(engine, role, f"{role}-campaigns")[1] for role in ("inspector", "sca", "data_scientist")
    }
    with TestClient(create_app(launched.url)) as client:

        def get(path: str, role: str) -> object:
            return client.get(path, headers={"Authorization": f"Bearer {tokens[role]}"})

        listed = get("/campaigns", "sca")
        assert listed.status_code == 200  # type: ignore[attr-defined]
        [item] = [c for c in listed.json()["items"] if c["name"] == NAME]  # type: ignore[attr-defined]
        assert item["created_by"] == "inspector-a"
        assert item["criteria"]["channel"] == "efact"
        detail = get(f"/campaigns/{NAME}", "inspector").json()  # type: ignore[attr-defined]
        assert detail["contacted"] == sum(p["arm"] == "contacted" for p in detail["providers"])
        assert detail["impact"]["status"] == "measured"
        assert get(f"/campaigns/{NAME}", "data_scientist").status_code == 403  # type: ignore[attr-defined]
        year = int(item["created_at"][:4])
        [reported] = get(f"/reports/annual/{year}", "sca").json()["sensitisation"]  # type: ignore[attr-defined]
        assert (reported["name"], reported["contacted"]) == (NAME, item["contacted"])
        assert reported["ci_low"] <= reported["effect"] <= reported["ci_high"]
        assert get(f"/reports/annual/{year - 1}", "sca").json()["sensitisation"] == []  # type: ignore[attr-defined]
        assert get("/campaigns/nothing-here", "sca").status_code == 404  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", NAME, *CRITERIA], f"A campaign named '{NAME}' exists already"),
        (["--name", "x", "--rule", "NO_SUCH_RULE"], "Unknown rule 'NO_SUCH_RULE'"),
        (["--name", "x", *CRITERIA[:2], "--channel", "fax"], "Unknown channel 'fax'"),
        (["--name", "../x", *CRITERIA[:2]], "A campaign name is letters, digits"),
        (["--name", "x", *CRITERIA, "--min-share", "1"], "provider(s) meet the criteria in 2023"),
    ],
)
def test_errors_are_one_line(
    launched: Campaign, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("SECM_DATABASE_URL", launched.url)
    done = CliRunner().invoke(app, ["campaign", "create", *args])
    assert done.exit_code == 1
    assert message in done.output
    assert len(done.output.strip().splitlines()) == 1


def test_a_campaign_on_each_database(service: Service) -> None:
    engine = engine_for(service.url)
    with engine.begin() as connection:
        created = create_campaign(
            connection, name="any-late", rule_id="LATE_ATTESTATION", created_by="t", min_share=0.01, min_lines=1
        )
    assert created["contacted"] >= 1
    assert created["comparison"] >= 1
    with engine.connect() as connection:
        assert impact(connection, campaign(connection, "any-late"))["status"] in ("measured", "waiting")
        with pytest.raises(CampaignError, match="exists already"):
            create_campaign(connection, name="any-late", rule_id="LATE_ATTESTATION", created_by="t")
    assert service.get("/campaigns/any-late", role="sca").json()["name"] == "any-late"


def test_the_annual_report_exports_its_campaigns(
    launched: Campaign, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECM_DATABASE_URL", launched.url)
    year = str(date.today().year)
    for fmt in ("csv", "xlsx", "html"):
        out = tmp_path / f"report.{fmt}"
        done = CliRunner().invoke(app, ["report", "--year", year, "--format", fmt, "--out", str(out)])
        assert done.exit_code == 0, done.output
    rows = pl.read_csv(tmp_path / "report.csv").filter(pl.col("section") == "sensitisation")
    assert set(rows["item"]) == {NAME}
    assert NAME in (tmp_path / "report.html").read_text(encoding="utf-8")
    with zipfile.ZipFile(tmp_path / "report.xlsx") as workbook:
        sheets = workbook.read("xl/workbook.xml").decode()
        strings = workbook.read("xl/sharedStrings.xml").decode()
    assert 'name="sensitisation"' in sheets
    assert NAME in strings

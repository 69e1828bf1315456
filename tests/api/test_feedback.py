"""A provider's feedback profile: their figures against their peers, in their language, no patient data."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from api import formats
from api.database import engine_for
from api.documents import texts
from api.feedback import deadlines, feedback_profile
from api.formats import Lang
from api.narrative import named_contributions, narrative
from detectors.indicators import FEATURES, NAMED_FROM, TOP_FEATURES
from detectors.profiles import period_bounds
from secm.cli import app
from tests.api.conftest import Published, Service

LATE = "LATE_ATTESTATION"


def _late_provider(results: Published) -> tuple[str, str]:
    """The provider with the most late lines, and the year of most of them."""
    late = results.flags.filter(pl.col("rule_id") == LATE).with_columns(
        pl.col("service_date").dt.year().cast(pl.String).alias("period")
    )
    top = late.group_by("provider_nihdi", "period").len().sort("len", "provider_nihdi", descending=True).row(0)
    return top[0], top[1]


@pytest.mark.parametrize(
    ("value", "lang", "digits", "expected"),
    [
        (1234.5, "fr", 2, "1.234,50"),
        (1234567.891, "nl", 1, "1.234.567,9"),
        (1234.5, "en", 2, "1,234.50"),
        (-0.5, "fr", 2, "-0,50"),
        (12, "nl", 0, "12"),
    ],
)
def test_numbers_in_belgian_and_english_formats(value: float, lang: formats.Lang, digits: int, expected: str) -> None:
    assert formats.number(value, lang, digits) == expected


def test_amounts_percentages_and_dates() -> None:
    assert formats.amount(1234.56, "fr") == "1.234,56\u00a0€"
    assert formats.amount(1234.56, "nl") == "1.234,56\u00a0€"
    assert formats.amount(1234.56, "en") == "€1,234.56"
    assert formats.amount(-3, "en") == "-€3.00"
    assert formats.percent(0.1234, "fr") == "12,3\u00a0%"
    assert formats.percent(0.1234, "en") == "12.3%"
    assert formats.day(date(2026, 12, 3), "nl") == "03/12/2026"
    assert formats.day(date(2026, 12, 3), "en") == "3 Dec 2026"


def test_periods_are_years_or_quarters() -> None:
    assert period_bounds("2024") == (date(2024, 1, 1), date(2025, 1, 1))
    assert period_bounds("2024Q2") == (date(2024, 4, 1), date(2024, 7, 1))
    assert period_bounds("2024Q4") == (date(2024, 10, 1), date(2025, 1, 1))


def test_deadlines_per_channel_follow_the_catalog_and_the_legislation() -> None:
    nurse = deadlines("nurse", "current")
    assert nurse["efact"] == {"months": 1}  # home nurses on eFact
    assert nurse["paper_third_party"] == {"months": 2}
    assert nurse["eattest"] == {"years": 2}
    assert deadlines("gp", "current")["efact"] == {"years": 2}  # the one-month delay is for nurses
    assert deadlines("gp", "reform_art174")["paper_cash"] == {"years": 1}


def test_the_figures_are_the_run_s_own(service: Service, results: Published) -> None:
    nihdi, period = _late_provider(results)
    engine = engine_for(service.url)
    with engine.connect() as connection:
        document = feedback_profile(connection, nihdi, period=period)

    lines = results.references["billing_lines"].filter(
        (pl.col("provider_nihdi") == nihdi) & (pl.col("service_date").dt.year().cast(pl.String) == period)
    )
    per_channel = dict(lines.group_by("channel").len().iter_rows())
    flags = results.flags.filter(
        (pl.col("provider_nihdi") == nihdi) & (pl.col("service_date").dt.year().cast(pl.String) == period)
    )
    late = dict(flags.filter(pl.col("rule_id") == LATE).group_by("channel").len().iter_rows())
    assert {c["channel"]: c["lines"] for c in document["channels"]} == per_channel
    assert {c["channel"]: c["late"] for c in document["channels"] if c["late"]} == late
    assert {r["rule_id"]: r["lines"] for r in document["rules"]} == dict(flags.group_by("rule_id").len().iter_rows())

    # Each indicator against the provider's own peer group of that period.
    scores = results.scores.filter(pl.col("period") == period)
    group = scores.filter(pl.col("provider_nihdi") == nihdi)["peer_group"].item()
    peers = results.profiles.join(
        scores.filter(pl.col("peer_group") == group).select("provider_nihdi", "period"), on=["provider_nihdi", "period"]
    )
    own = results.profiles.filter((pl.col("provider_nihdi") == nihdi) & (pl.col("period") == period))
    assert [i["feature"] for i in document["indicators"]] == list(FEATURES)
    assert document["peers"] == peers.height
    for indicator in document["indicators"]:
        feature = indicator["feature"]
        assert indicator["value"] == pytest.approx(own[feature].item())
        assert indicator["peer_median"] == pytest.approx(peers[feature].median())
        below = (peers[feature] < own[feature].item()).sum() + 0.5 * (peers[feature] == own[feature].item()).sum()
        assert indicator["peers_below"] == pytest.approx(below / peers.height)


def test_pages_in_french_and_dutch_without_patient_data(service: Service, results: Published) -> None:
    nihdi, period = _late_provider(results)
    french = service.get(f"/providers/{nihdi}/profile", lang="fr", period=period)
    assert french.status_code == 200, french.text
    assert french.headers["content-type"].startswith("text/html")
    # Inline styles and charts, never a script.
    assert french.headers["content-security-policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert "<script" not in french.text
    page = french.text
    assert '<html lang="fr">' in page
    assert "Votre profil de facturation" in page
    assert "Attestation ou facturation tardive" in page  # the rule's French title
    assert "mois après la fin du mois de la prestation" in page  # a third-party channel's deadline
    # The late lines' amount in Belgian format, written out here by hand.
    amount = results.flags.filter(
        (pl.col("provider_nihdi") == nihdi)
        & (pl.col("rule_id") == LATE)
        & (pl.col("service_date").dt.year().cast(pl.String) == period)
    )["amount_at_stake_eur"].sum()
    euros, cents = f"{amount:.2f}".split(".")
    grouped = re.sub(r"(?<=\d)(?=(\d{3})+$)", ".", euros)
    assert f"{grouped},{cents}\u00a0€" in page
    assert re.search(r"\d+,\d\u00a0%", page)  # shares with a decimal comma
    assert f"Établi le {date.today():%d/%m/%Y}." in page

    dutch = service.get(f"/providers/{nihdi}/profile", lang="nl", period=period).text
    assert '<html lang="nl">' in dutch
    assert "Uw facturatieprofiel" in dutch
    assert "Laattijdig getuigschrift of laattijdige facturatie" in dutch
    assert f"{grouped},{cents}\u00a0€" in dutch

    # No patient identifier, in any language.
    patients = results.references["billing_lines"]["patient_id"].unique().to_list()
    for text in (page, dutch, service.get(f"/providers/{nihdi}/profile", lang="en", period=period).text):
        assert not [p for p in patients if p in text]


def test_language_defaults_to_the_region_s(service: Service, results: Published) -> None:
    regions = results.profiles.group_by("region").agg(pl.col("provider_nihdi").first())
    expected = {"VLA": "nl", "WAL": "fr", "BRU": "fr"}
    for region, nihdi in regions.iter_rows():
        page = service.get(f"/providers/{nihdi}/profile").text
        assert f'<html lang="{expected.get(region, "en")}">' in page


def test_refusals(service: Service, results: Published) -> None:
    nihdi = results.profiles["provider_nihdi"][0]
    assert service.get("/providers/99999999999/profile").status_code == 404
    missing = service.get(f"/providers/{nihdi}/profile", period="1999")
    assert missing.status_code == 404
    assert "no profile for period 1999" in missing.json()["detail"]
    assert service.get(f"/providers/{nihdi}/profile", lang="de").status_code == 422
    assert service.get(f"/providers/{nihdi}/profile", period="2024Q5").status_code == 422
    assert service.get(f"/providers/{nihdi}/profile", role="sca").status_code == 403
    assert service.client.get(f"/providers/{nihdi}/profile").status_code == 401


def test_command_writes_the_page(
    service: Service, results: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECM_DATABASE_URL", service.url)
    nihdi, period = _late_provider(results)
    out = tmp_path / "profile.html"
    done = CliRunner().invoke(app, ["profile", "--nihdi", nihdi, "--lang", "nl", "--period", period, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert '<html lang="nl">' in out.read_text(encoding="utf-8")
    unknown = CliRunner().invoke(app, ["profile", "--nihdi", "99999999999"])
    assert unknown.exit_code == 1
    assert "99999999999 has no profile" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("lang", "expected_for", "words"),
    [
        ("fr", "lines_per_patient", "attendu pour son nombre de prestations par patient"),
        ("nl", "patients_and_lines_per_patient", "verwacht voor de eigen patiënten en het eigen aantal prestaties"),
        ("en", "lines_per_patient", "expected for their number of services per patient"),
        ("fr", None, "attendu pour ses patients"),  # a run published before trade-offs
    ],
)
def test_a_narrative_says_what_an_expected_value_was_expected_for(
    lang: Lang, expected_for: str | None, words: str
) -> None:
    seen_once = {
        "group": "patient list",
        "feature": "share_patients_seen_once",
        "value": 0.33,
        "peer_median": 0.32,
        "expected": 0.27,
        "peer_percentile": 0.53,
        "robust_z": 6.3,
        "contribution": 39.8,
    }
    if expected_for:
        seen_once["expected_for"] = expected_for
    facts = {
        "run_date": date(2026, 12, 1),
        "provider_nihdi": "10000000001",
        "profession": "gp",
        "region": "BRU",
        "rules": [],
        "period": "2025",
        "peers": 300,
        "named": [seen_once],
        "streak": 1,
    }
    assert words in " ".join(narrative(facts, lang))


def test_a_case_narrative_states_the_run_s_facts_in_each_language(service: Service, results: Published) -> None:
    nihdi, _ = _late_provider(results)
    flags = results.flags.filter(pl.col("provider_nihdi") == nihdi)
    amount = flags["amount_at_stake_eur"].sum()
    euros, cents = f"{amount:.2f}".split(".")
    french = service.get(f"/providers/{nihdi}/narrative", lang="fr").json()
    assert french["lang"] == "fr"
    assert f"{flags.height} prestations du prestataire {nihdi}" in french["text"]
    assert re.sub(r"(?<=\d)(?=(\d{3})+$)", ".", euros) + f",{cents}\u00a0€" in french["text"]
    assert "« Attestation ou facturation tardive »" in french["text"]
    dutch = service.get(f"/providers/{nihdi}/narrative", lang="nl").json()["text"]
    assert "Laattijdig getuigschrift of laattijdige facturatie" in dutch
    patients = results.references["billing_lines"]["patient_id"].drop_nulls().unique().to_list()
    assert not [p for p in patients if p in french["text"] + dutch]

    # The most atypical provider of the latest period: its named features and its persistence.
    latest = results.scores.filter(pl.col("period") == results.scores["period"].max()).sort("score", descending=True)
    top = latest.row(0, named=True)
    named = [c["feature"] for c in json.loads(top["contributions"]) if c["contribution"] >= NAMED_FROM][:TOP_FEATURES]
    text = service.get(f"/providers/{top['provider_nihdi']}/narrative", lang="en").json()["text"]
    words = texts()["en"]["features"]
    assert named
    assert all(words[f].lower() in text for f in named)
    assert all(words[f].lower() not in text for f in set(FEATURES) - set(named))
    if top["top_decile_streak"] >= 2:
        assert f"for {top['top_decile_streak']} consecutive periods" in text
    assert service.get("/providers/99999999999/narrative").status_code == 404
    assert service.get(f"/providers/{nihdi}/narrative", lang="de").status_code == 422
    assert service.get(f"/providers/{nihdi}/narrative", role="sca").status_code == 403


def test_an_explanation_names_what_drove_the_score_whatever_the_model() -> None:
    peer_evidence = [
        {"feature": "evening_share", "contribution": 30.0, "robust_z": 5.5},
        {"feature": "night_share", "contribution": 3.0, "robust_z": 1.7},
    ]
    assert [c["feature"] for c in named_contributions(peer_evidence)] == ["evening_share"]
    # A model of the zoo explains by robust z, both ways: only "higher than peers" is named.
    zoo = [
        {"feature": "lines_per_patient", "robust_z": -6.0},
        {"feature": "home_visit_share", "robust_z": 3.1},
        {"feature": "weekend_share", "robust_z": 1.2},
    ]
    assert [c["feature"] for c in named_contributions(zoo)] == ["home_visit_share"]

"""The SCA's annual figures reconcile with the flags and cases, over HTTP and as exports."""

from __future__ import annotations

import html
import json
import re
import zipfile
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from api import tables as t
from api.database import migrate
from api.report_export import to_html
from rules import load_catalog
from secm.cli import app
from secm.pipeline import MISCODING_RULES, quarantine_by_insurer, quarantine_by_year
from secm.synth.habits import STAMPING_SOFTWARE
from secm.synth.population import SOFTWARE
from tests.api.conftest import Published, Service


def _year(results: Published) -> int:
    return int(results.flags["service_date"].dt.year().max())  # type: ignore[arg-type]


def _sums(items: list[dict], key: str) -> float:
    return round(sum(i[key] for i in items), 2)


def test_every_total_is_the_sum_of_its_breakdowns_and_of_the_flags(service: Service, results: Published) -> None:
    year = _year(results)
    report = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()
    flags = results.flags.filter(pl.col("service_date").dt.year() == year)
    lines = flags.group_by("claim_id").agg(pl.col("provider_nihdi").first(), pl.col("amount_at_stake_eur").max())
    assert report["totals"]["lines_flagged"] == lines.height > 0
    assert report["totals"]["flags"] == flags.height
    assert report["totals"]["amount_at_stake_eur"] == pytest.approx(lines["amount_at_stake_eur"].sum(), abs=0.01)
    assert report["totals"]["providers"] == flags["provider_nihdi"].n_unique()
    by_rule = {r["rule_id"]: r for r in report["rules"]}
    for rule_id, group in flags.group_by("rule_id"):
        row = by_rule[str(rule_id[0])]
        assert row["lines_flagged"] == group.height
        assert row["providers"] == group["provider_nihdi"].n_unique()
        assert row["amount_at_stake_eur"] == pytest.approx(group["amount_at_stake_eur"].sum(), abs=0.01)
    assert _sums(report["rules"], "lines_flagged") == report["totals"]["flags"]
    for dimension, items in report["breakdowns"].items():
        assert _sums(items, "lines_flagged") == report["totals"]["lines_flagged"], dimension
        assert _sums(items, "amount_at_stake_eur") == pytest.approx(report["totals"]["amount_at_stake_eur"], abs=0.05)
    billed = results.info["volumes"]
    assert report["billed_amount_eur"] == pytest.approx(sum(v["amount_eur"] for v in billed if v["year"] == year))
    quality = {q["insurer_code"]: q for q in report["data_quality"]}
    pseudo = flags.filter(rule_id="PSEUDO_TP_NUMBER").group_by("insurer_code").len()
    for insurer, n in pseudo.iter_rows():
        assert quality[insurer]["pseudo_number_lines"] == n
        assert quality[insurer]["pseudo_number_rate"] == pytest.approx(
            n / quality[insurer]["third_party_lines"], rel=1e-4
        )
    late = flags.filter(rule_id="LATE_ATTESTATION").height
    assert sum(c["late"] for q in report["data_quality"] for c in q["late_billing_by_channel"].values()) == late
    assert report["anomaly_detection"]["providers_scored"] == results.scores.filter(period=str(year)).height
    assert [m["rule_id"] for m in report["datamatchings"]] == [r["rule_id"] for r in report["rules"]]
    assert (
        "tp_suspensions"
        in next(m for m in report["datamatchings"] if m["rule_id"] == "TP_SUSPENDED_BILLING")["data_sources"]
    )


def test_a_line_caught_by_two_rules_counts_once_in_the_totals(service: Service, results: Published) -> None:
    year = _year(results)
    late = results.flags.filter((pl.col("rule_id") == "LATE_ATTESTATION") & (pl.col("service_date").dt.year() == year))
    twice = late.head(1).with_columns(pl.lit("DUPLICATE_BILLING").alias("rule_id"), pl.col("amount_at_stake_eur") * 2)
    replace(results, flags=pl.concat([results.flags, twice])).into(
        service.url, run_id="run-2", created_at="2026-02-01T00:00:00+00:00"
    )
    before = results.flags.filter(pl.col("service_date").dt.year() == year)
    report = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()
    assert report["runs"][0]["run_id"] == "run-2"
    assert report["totals"]["lines_flagged"] == before["claim_id"].n_unique()
    assert report["totals"]["flags"] == before.height + 1
    # The line counts at the most a rule put at stake on it, once.
    expected = before["amount_at_stake_eur"].sum() + late["amount_at_stake_eur"][0]
    assert report["totals"]["amount_at_stake_eur"] == pytest.approx(expected, abs=0.01)
    for items in report["breakdowns"].values():
        assert _sums(items, "lines_flagged") == report["totals"]["lines_flagged"]
        assert _sums(items, "amount_at_stake_eur") == pytest.approx(expected, abs=0.05)
    by_rule = {r["rule_id"]: r["lines_flagged"] for r in report["rules"]}
    assert by_rule["DUPLICATE_BILLING"] == before.filter(rule_id="DUPLICATE_BILLING").height + 1


def test_billing_packages_reconcile_and_the_stamping_one_stands_out(service: Service, results: Published) -> None:
    year = _year(results)
    packages = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()["software"]
    flags = results.flags.filter(pl.col("service_date").dt.year() == year)
    billed = sum(v["lines"] for v in results.info["volumes"] if v["year"] == year)
    assert sum(p["lines"] for p in packages) == billed
    for rule in MISCODING_RULES:
        assert sum(p[f"{rule.lower()}_flags"] for p in packages) == flags.filter(rule_id=rule).height
    shares = {p["software_id"]: p["stamped_share"] for p in packages if p["software_id"] in SOFTWARE}
    assert max(shares, key=lambda name: shares[name] or 0.0) == STAMPING_SOFTWARE
    assert all(share == 0.0 for name, share in shares.items() if name != STAMPING_SOFTWARE)


def test_cases_and_year_over_year(service: Service, results: Published) -> None:
    year = _year(results)
    nihdi = str(results.flags["provider_nihdi"][0])
    case = service.send("post", "/cases", provider_nihdi=nihdi).json()
    path = f"/cases/{case['id']}"
    early = service.send("post", f"{path}/recoveries", amount_eur=10.0, received_on=date.today().isoformat())
    assert early.status_code == 409
    assert "money is recovered on a case closed as confirmed" in early.json()["detail"]
    service.send("patch", path, status="closed", outcome="confirmed", amount_to_recover_eur=120.5)
    ahead = (date.today() + timedelta(days=1)).isoformat()
    assert service.send("post", f"{path}/recoveries", amount_eur=10.0, received_on=ahead).status_code == 422
    assert service.send("post", f"{path}/recoveries", amount_eur=0, received_on=ahead).status_code == 422
    last_year = date(date.today().year - 1, 12, 31).isoformat()
    for amount, received in ((100.0, date.today().isoformat()), (20.0, date.today().isoformat()), (5.0, last_year)):
        recorded = service.send("post", f"{path}/recoveries", amount_eur=amount, received_on=received, note="paid")
        assert recorded.status_code == 201, recorded.text
    shown = recorded.json()
    assert shown["amount_recovered_eur"] == 125.0
    assert [(r["amount_eur"], r["received_on"]) for r in shown["recoveries"]] == [
        (5.0, last_year),
        (100.0, date.today().isoformat()),
        (20.0, date.today().isoformat()),
    ]
    assert service.get(path).json()["amount_recovered_eur"] == 125.0
    this_year = service.get(f"/reports/annual/{date.today().year}", "sca", suppress=False).json()["cases"]
    no_steps = {"sensitisations": 0, "warnings": 0, "official_reports": 0, "sanctions": 0, "sanctions_eur": 0.0}
    assert this_year == {
        "opened": 1,
        "closed": 1,
        "confirmed": 1,
        "unfounded": 0,
        "amount_to_recover_eur": 120.5,
        "cases_recovered_on": 1,
        "amount_recovered_eur": 120.0,  # received this year; the rest counts in the year before
        **no_steps,
    }
    before = service.get(f"/reports/annual/{date.today().year - 1}", "sca", suppress=False).json()["cases"]
    assert (before["cases_recovered_on"], before["amount_recovered_eur"]) == (1, 5.0)
    report = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()
    earlier = results.flags.filter(pl.col("service_date").dt.year() == year - 1)
    for change, rule in zip(report["year_over_year"], report["rules"], strict=True):
        before = earlier.filter(rule_id=change["rule_id"]).height
        assert change["previous_lines_flagged"] == before
        assert change["lines_flagged"] == rule["lines_flagged"] - before


def test_a_year_without_data_is_zeros(service: Service) -> None:
    report = service.get("/reports/annual/1995", "sca").json()
    assert report["totals"] == {"lines_flagged": 0, "providers": 0, "amount_at_stake_eur": 0.0, "flags": 0}
    assert all(r["lines_flagged"] == 0 and r["amount_at_stake_eur"] == 0 for r in report["rules"])
    assert report["cases"]["opened"] == 0
    assert all(items == [] for items in report["breakdowns"].values())


def test_detection_year_counts_each_flag_once(service: Service, results: Published) -> None:
    first = service.get("/reports/annual/2026", "sca", basis="detection").json()
    assert first["totals"]["lines_flagged"] == results.flags.height
    results.into(service.url, run_id="run-2", created_at="2026-02-01T00:00:00+00:00")
    again = service.get("/reports/annual/2026", "sca", basis="detection").json()
    assert again["totals"]["lines_flagged"] == results.flags.height
    assert service.get("/reports/annual/2025", "sca", basis="detection").json()["totals"]["lines_flagged"] == 0


def test_only_sca_and_admin_read_reports(service: Service) -> None:
    assert service.get("/reports/annual/2024", "inspector").status_code == 403
    assert service.get("/reports/annual/2024", "admin").status_code == 200
    assert service.get("/reports/annual/24", "sca").status_code == 422


def test_exports(service: Service, results: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECM_DATABASE_URL", service.url)
    year = _year(results)
    runner = CliRunner()
    for fmt in ("json", "csv", "xlsx", "html"):
        out = tmp_path / f"report.{fmt}"
        result = runner.invoke(app, ["report", "--year", str(year), "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0
    rows = pl.read_csv(tmp_path / "report.csv", infer_schema=False)
    total = rows.filter(section="totals", metric="lines_flagged")["value"].item()
    assert int(total) == results.flags.filter(pl.col("service_date").dt.year() == year).height
    with zipfile.ZipFile(tmp_path / "report.xlsx") as workbook:
        sheets = workbook.read("xl/workbook.xml").decode()
    assert all(f'name="{s}"' in sheets for s in ("rules", "by_profession", "data_quality", "software", "datamatchings"))
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "@media print" in page
    bad = runner.invoke(app, ["report", "--year", "2024", "--format", "pdf"])
    assert bad.exit_code == 1
    assert "--format must be one of" in bad.output


def test_rules_are_backtested_on_closed_cases(service: Service, results: Published) -> None:
    """Per rule, the share of confirmed cases among the flagged providers that were investigated."""
    by_rule = results.flags.group_by("rule_id").agg(pl.col("provider_nihdi").unique().sort())
    late = by_rule.filter(rule_id="LATE_ATTESTATION")["provider_nihdi"].item().to_list()
    assert len(late) >= 3
    confirmed, unfounded = late[0], late[1]
    for nihdi, outcome in ((confirmed, "confirmed"), (unfounded, "unfounded")):
        case = service.send("post", "/cases", provider_nihdi=nihdi).json()
        service.send("patch", f"/cases/{case['id']}", status="closed", outcome=outcome, amount_to_recover_eur=1.0)
    service.send("post", "/cases", provider_nihdi=late[-1])  # still open: not a verdict

    rules = {r["rule_id"]: r["backtest"] for r in service.get("/rules", "sca").json()}
    assert rules["LATE_ATTESTATION"] == {"investigated": 2, "confirmed": 1, "confirmed_share": 0.5}
    flagged_by = {rule: set(providers) for rule, providers in by_rule.iter_rows()}
    for rule, backtest in rules.items():
        investigated = len(flagged_by.get(rule, set()) & {confirmed, unfounded})
        assert backtest["investigated"] == investigated, rule
        if not investigated:
            assert backtest["confirmed_share"] is None
    report = service.get(f"/reports/annual/{date.today().year}", "sca", suppress=False).json()
    late_row = next(r for r in report["rules"] if r["rule_id"] == "LATE_ATTESTATION")
    assert (late_row["investigated"], late_row["confirmed"], late_row["confirmed_share"]) == (2, 1, 0.5)
    earlier = service.get(f"/reports/annual/{date.today().year - 1}", "sca", suppress=False).json()
    assert all(r["investigated"] == 0 for r in earlier["rules"])  # no case was closed that year


HOSTILE = ['=HYPERLINK("http://example.org/x","click")', "@SUM(1+1)", "+1-1", "-1+cmd", "\tlead", r"$\foo{$"]


def test_exports_are_inert(results: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text that reached a run from its input (a quarantined row's insurer code, a billing
    package's name) is never a formula in the CSV or the workbook, nor mathtext in a chart."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    software = dict(results.info["software"][0])  # type: ignore[index]
    info = {
        **results.info,
        "quarantine_by_insurer": {code: {"invalid_insurer_code": 1} for code in HOSTILE},
        "quarantine_by_year": {str(software["year"]): {code: {"invalid_insurer_code": 1} for code in HOSTILE}},
        "software": [*results.info["software"], *({**software, "software_id": s} for s in HOSTILE)],  # type: ignore[misc]
    }
    Published(info, *(getattr(results, f) for f in ("flags", "scores", "profiles", "quarantine", "references"))).into(
        url
    )
    monkeypatch.setenv("SECM_DATABASE_URL", url)
    year = software["year"]
    for fmt in ("csv", "xlsx", "html"):
        result = CliRunner().invoke(
            app, ["report", "--year", str(year), "--format", fmt, "--out", str(tmp_path / f"r.{fmt}")]
        )
        assert result.exit_code == 0, result.output
    csv = pl.read_csv(tmp_path / "r.csv", infer_schema=False)
    cells = pl.concat([csv[c] for c in csv.columns]).drop_nulls()
    assert not cells.str.contains(r"^[=+@\t\r]|^-[^0-9]").any(), cells.filter(cells.str.contains(r"^[=+@\t\r-]"))
    assert cells.str.starts_with("'=HYPERLINK").any()
    with zipfile.ZipFile(tmp_path / "r.xlsx") as workbook:
        parts = [workbook.read(n).decode() for n in workbook.namelist() if n.startswith("xl/worksheets/")]
        strings = workbook.read("xl/sharedStrings.xml").decode()
    assert not any("<f>" in part for part in parts)  # no formula anywhere
    assert "'=HYPERLINK" in strings.replace("&quot;", '"')
    assert "invalid" in (tmp_path / "r.html").read_text()


def test_quarantined_insurer_codes_are_report_keys_only_when_valid() -> None:
    raw = [json.dumps({"insurer_code": c}) for c in ["100", "1", "=1+1", "\uff11\uff10\uff10"]] + ["{}"]
    quarantine = pl.DataFrame({"raw_values": raw, "reasons": [["x"]] * 5})
    assert quarantine_by_insurer(quarantine) == {"100": {"x": 1}, "invalid": {"x": 4}}


def test_quarantine_counts_in_the_year_of_its_rows() -> None:
    raw = [
        json.dumps({"insurer_code": "100", "service_date": "2023-05-01"}),
        json.dumps({"insurer_code": "100", "service_date": " 2024-01-02", "submitted_date": "2025-01-01"}),
        json.dumps({"insurer_code": "200", "submitted_date": "2024-02-01"}),  # an invoice
        json.dumps({"insurer_code": "300", "service_date": "yesterday"}),
    ]
    quarantine = pl.DataFrame({"raw_values": raw, "reasons": [["x"], ["x", "y"], ["x"], ["x"]]})
    assert quarantine_by_year(quarantine) == {
        "2023": {"100": {"x": 1}},
        "2024": {"100": {"x": 1, "y": 1}, "200": {"x": 1}},
        "unknown": {"300": {"x": 1}},
    }


def test_data_quality_counts_the_report_year_s_bad_rows_only(service: Service, results: Published) -> None:
    by_year = quarantine_by_year(results.quarantine)
    for year in (_year(results) - 1, _year(results)):
        quality = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()["data_quality"]
        reported = {q["insurer_code"]: q["quarantined_rows_by_reason"] for q in quality}
        expected = by_year.get(str(year), {})
        assert {k: v for k, v in reported.items() if v} == expected
    assert sum(sum(r.values()) for y in by_year.values() for r in y.values()) > sum(
        sum(r.values()) for r in by_year.get(str(_year(results)), {}).values()
    )


def test_chart_labels_are_shown_as_typed(service: Service, results: Published) -> None:
    """A label between two ``$`` is no mathtext for matplotlib: the page is still drawn."""
    report = service.get(f"/reports/annual/{_year(results)}", "sca", suppress=False).json()
    for dimension in ("profession", "region"):
        report["breakdowns"][dimension][0]["value"] = r"$\foo{$"
    report["rules"][0]["rule_id"] = r"$\frac{$"
    page = to_html(report)
    assert page.count("data:image/png;base64,") == 4


def test_small_cells_are_suppressed_in_every_export(
    service: Service, results: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    year = _year(results)
    full = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()
    small = [r for r in full["rules"] if 0 < r["providers"] < 5]
    assert small  # the generated data has rules that catch only a few providers
    rule = small[0]["rule_id"]
    published = service.get(f"/reports/annual/{year}", "sca").json()
    row = next(r for r in published["rules"] if r["rule_id"] == rule)
    assert row["suppressed"]
    assert (row["lines_flagged"], row["providers"], row["amount_at_stake_eur"]) == (None, None, None)
    assert published["totals"] == full["totals"]  # totals are not cells
    assert published["suppression"]["minimum"] == 5
    assert published["suppression"]["suppressed_cells"] > 0
    for items in published["breakdowns"].values():
        assert all(i["providers"] is None or i["providers"] >= 5 for i in items)
    change = next(c for c in published["year_over_year"] if c["rule_id"] == rule)
    assert change["lines_flagged"] is None  # the change would give the cell away

    monkeypatch.setenv("SECM_DATABASE_URL", service.url)
    for fmt in ("json", "csv", "xlsx", "html"):
        done = CliRunner().invoke(
            app, ["report", "--year", str(year), "--format", fmt, "--out", str(tmp_path / f"r.{fmt}")]
        )
        assert done.exit_code == 0, done.output
    exported = json.loads((tmp_path / "r.json").read_text())
    assert next(r for r in exported["rules"] if r["rule_id"] == rule)["lines_flagged"] is None
    csv = pl.read_csv(tmp_path / "r.csv", infer_schema=False).filter(section="rules", item=rule)
    assert set(csv.filter(pl.col("metric").is_in(["lines_flagged", "providers", "amount_at_stake_eur"]))["value"]) == {
        "<5"
    }
    page = (tmp_path / "r.html").read_text()
    cells = re.search(rf"<tr><td>{rule}</td>(.*?)</tr>", page)
    assert cells is not None
    assert "&lt;5" in cells.group(1)
    with zipfile.ZipFile(tmp_path / "r.xlsx") as workbook:
        assert "suppressed" in workbook.read("xl/sharedStrings.xml").decode()

    # The full figures are for internal use, and every read of them is audited.
    unsuppressed = CliRunner().invoke(
        app, ["report", "--year", str(year), "--no-suppression", "--out", str(tmp_path / "all.json")]
    )
    assert unsuppressed.exit_code == 0, unsuppressed.output
    assert next(r for r in json.loads((tmp_path / "all.json").read_text())["rules"] if r["rule_id"] == rule)[
        "providers"
    ]
    reads = service.get("/audit", "admin", action="read_report_unsuppressed").json()["items"]
    assert sorted(r["role"] for r in reads) == ["command_line", "sca"]


def test_french_and_dutch_reports_carry_the_catalog_s_titles(
    service: Service, results: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    year = _year(results)
    catalog = load_catalog()
    for lang, heading in (("fr", "Contrôle de la facturation"), ("nl", "Controle van de facturatie")):
        report = service.get(f"/reports/annual/{year}", "sca", lang=lang).json()
        assert report["lang"] == lang
        assert [r["title"] for r in report["rules"]] == [rule.titles[lang] for rule in catalog]
        monkeypatch.setenv("SECM_DATABASE_URL", service.url)
        out = tmp_path / f"report_{lang}.html"
        done = CliRunner().invoke(
            app, ["report", "--year", str(year), "--format", "html", "--lang", lang, "--out", str(out)]
        )
        assert done.exit_code == 0, done.output
        page = out.read_text(encoding="utf-8")
        assert f"<html lang='{lang}'>" in page
        assert heading in page
        assert all(html.escape(rule.titles[lang]) in page for rule in catalog)
        csv_out = tmp_path / f"report_{lang}.csv"
        args = ["report", "--year", str(year), "--format", "csv", "--lang", lang, "--out", str(csv_out)]
        assert CliRunner().invoke(app, args).exit_code == 0
        titles = pl.read_csv(csv_out, infer_schema=False).filter(section="rules", metric="title")["value"]
        assert set(titles) == {rule.titles[lang] for rule in catalog}
    assert service.get(f"/reports/annual/{year}", "sca", lang="de").status_code == 422
    wrong = CliRunner().invoke(app, ["report", "--year", str(year), "--lang", "de"])
    assert wrong.exit_code == 1
    assert "--lang must be one of fr, nl, en" in wrong.output


def test_each_rule_as_a_datamatching_counts_what_it_checked_hit_and_led_to(
    service: Service, results: Published
) -> None:
    year = _year(results)
    flags = results.flags.filter(pl.col("service_date").dt.year() == year)
    nihdi = flags.group_by("provider_nihdi").len().sort("len", "provider_nihdi", descending=[True, False])[0, 0]
    other = flags.filter(pl.col("provider_nihdi") != nihdi)["provider_nihdi"][0]
    opened = datetime(year, 6, 1, tzinfo=UTC)
    case = {"run_id": "run-1", "status": "closed", "opened_by": "x", "opened_at": opened, "updated_at": opened}
    with migrate(service.url).begin() as connection:  # cases of that year, as if opened then
        connection.execute(
            t.cases.insert(),
            [
                {**case, "provider_nihdi": nihdi, "outcome": "confirmed", "amount_to_recover_eur": 100.0},
                {**case, "provider_nihdi": nihdi, "outcome": "unfounded", "amount_to_recover_eur": 0.0},
                {**case, "provider_nihdi": other, "outcome": "confirmed", "amount_to_recover_eur": 7.5},
            ],
        )
        first = connection.execute(sa.select(sa.func.min(t.cases.c.id))).scalar_one()
        recovery = {"author": "x", "note": "", "recorded_at": opened, "received_on": opened.date()}
        connection.execute(
            t.case_recoveries.insert(),
            [{**recovery, "case_id": first, "amount_eur": 60.0}, {**recovery, "case_id": first + 2, "amount_eur": 7.5}],
        )
    report = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()
    billed = sum(v["lines"] for v in results.info["volumes"] if v["year"] == year)
    for matching in report["datamatchings"]:
        mine = flags.filter(rule_id=matching["rule_id"])
        hit = set(mine["provider_nihdi"])
        assert matching["records_checked"] == billed
        assert (matching["lines_hit"], matching["providers_hit"]) == (mine.height, len(hit))
        expected = [
            c
            for c in ((nihdi, "confirmed", 100.0), (nihdi, "unfounded", 0.0), (other, "confirmed", 7.5))
            if c[0] in hit
        ]
        assert matching["cases_opened"] == len(expected)
        assert matching["confirmed"] == sum(c[1] == "confirmed" for c in expected)
        assert matching["unfounded"] == sum(c[1] == "unfounded" for c in expected)
        assert matching["amount_to_recover_eur"] == sum(c[2] for c in expected if c[1] == "confirmed")
        recovered = {nihdi: 60.0, other: 7.5}
        assert matching["amount_recovered_eur"] == sum(recovered[c[0]] for c in expected if c[1] == "confirmed")
    published = service.get(f"/reports/annual/{year}", "sca").json()["datamatchings"]
    for full, shown in zip(report["datamatchings"], published, strict=True):
        assert shown["cases_opened"] == (None if full["cases_opened"] else 0)  # at most three cases: suppressed


def test_targets_against_actuals(
    service: Service, results: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    year = _year(results)
    full = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()
    assert full["targets"] == []  # none configured
    region = max(full["breakdowns"]["region"], key=lambda r: r["providers"])
    small = next(r for r in full["rules"] if 0 < r["providers"] < 5)
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        f"{year}:\n"
        f"  totals.lines_flagged: {full['totals']['lines_flagged'] + 1}\n"
        f"  breakdowns.region.{region['value']}.providers: {region['providers']}\n"
        f"  rules.{small['rule_id']}.providers: 1\n"
        "  no.such.figure: 3\n"
        f"{year + 1}:\n  totals.lines_flagged: 1\n"
    )
    monkeypatch.setenv("SECM_REPORT_TARGETS", str(targets))
    rows = {r["figure"]: r for r in service.get(f"/reports/annual/{year}", "sca").json()["targets"]}
    assert rows["totals.lines_flagged"] == {
        "figure": "totals.lines_flagged",
        "target": full["totals"]["lines_flagged"] + 1,
        "actual": full["totals"]["lines_flagged"],
        "reached": False,
    }
    assert rows[f"breakdowns.region.{region['value']}.providers"]["reached"] is True
    assert rows[f"rules.{small['rule_id']}.providers"]["actual"] is None  # suppressed: no actual published
    assert rows["no.such.figure"]["actual"] is None
    assert len(rows) == 4  # the year's own targets only
    monkeypatch.setenv("SECM_DATABASE_URL", service.url)
    out = tmp_path / "r.csv"
    assert CliRunner().invoke(app, ["report", "--year", str(year), "--format", "csv", "--out", str(out)]).exit_code == 0
    assert pl.read_csv(out, infer_schema=False).filter(section="targets").height == 4 * 3
    targets.write_text("- not a mapping\n")
    broken = CliRunner().invoke(app, ["report", "--year", str(year), "--out", str(tmp_path / "x.json")])
    assert broken.exit_code == 1
    assert "must map years to figures" in broken.output
    answer = service.get(f"/reports/annual/{year}", "sca")
    assert answer.status_code == 500
    assert "must map years to figures" in answer.json()["detail"]


def test_insurer_indicators_for_the_control_office_reconcile_with_data_quality(
    service: Service, results: Published
) -> None:
    year = _year(results)
    report = service.get(f"/reports/annual/{year}", "sca", suppress=False).json()
    quality = {q["insurer_code"]: q for q in report["data_quality"]}
    indicators = report["insurer_indicators"]
    assert {i["insurer_code"] for i in indicators} == set(quality)
    by = {(i["insurer_code"], i["indicator"]): i for i in indicators}
    lines = results.flags.filter(pl.col("service_date").dt.year() == year).unique("claim_id")
    for code, q in quality.items():
        pseudo = by[(code, "pseudo_number_rate")]
        assert (pseudo["numerator"], pseudo["denominator"]) == (q["pseudo_number_lines"], q["third_party_lines"])
        assert pseudo["rate"] == (
            round(pseudo["numerator"] / pseudo["denominator"], 6) if pseudo["denominator"] else None
        )
        late = by[(code, "late_billing_rate")]
        assert late["numerator"] == sum(c["late"] for c in q["late_billing_by_channel"].values())
        billed = sum(v["lines"] for v in results.info["volumes"] if v["year"] == year and v["insurer_code"] == code)
        flagged = by[(code, "flagged_line_rate")]
        assert (flagged["numerator"], flagged["denominator"]) == (lines.filter(insurer_code=code).height, billed)
        assert by[(code, "amount_at_stake_share")]["domain"] == "control"
    published = service.get(f"/reports/annual/{year}", "sca").json()["insurer_indicators"]
    for full, shown in zip(indicators, published, strict=True):
        small = full["indicator"] != "amount_at_stake_share" and 0 < full["numerator"] < 5
        if small:
            assert (shown["numerator"], shown["rate"]) == (None, None)
            assert shown["denominator"] == full["denominator"]
        elif full["indicator"] != "amount_at_stake_share":
            assert shown == full

"""The annual report exported: JSON, a long CSV, an Excel workbook, or HTML with charts.

The HTML page is self-contained (charts are inline PNGs drawn with matplotlib) and has print
styles, so that a browser prints it cleanly to PDF.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import polars as pl
from matplotlib.figure import Figure

from api import formats
from api.documents import texts
from api.suppression import shown

FORMATS = ("json", "csv", "xlsx", "html")
# A spreadsheet reads a cell that starts with one of = + - @ tab or carriage return as a
# formula (OWASP, CSV injection).
FORMULA_START = r"^[=+\-@\t\r]"
NUMBER = r"^[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"


def inert(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text cell a spreadsheet would run as a formula, prefixed with ``'`` so that it is
    shown as typed; numbers written as text (``-12.5``) are left alone."""
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_START) & ~pl.col(c).str.contains(NUMBER))
        .then(pl.lit("'") + pl.col(c))
        .otherwise(pl.col(c))
        .alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    )


def _label(text: object) -> str:
    """A chart label shown as typed: matplotlib reads text between two ``$`` as mathtext."""
    return str(text).replace("$", r"\$")


def long_rows(report: dict[str, Any]) -> pl.DataFrame:
    """Every figure as one row: ``section``, ``item``, ``metric``, ``value``."""
    rows: list[dict[str, Any]] = []

    def add(section: str, item: str, values: dict[str, Any], within: dict[str, Any] | None = None) -> None:
        row = within or values  # a nested figure is suppressed with the row it belongs to
        for metric, value in values.items():
            if isinstance(value, dict):
                add(section, f"{item}/{metric}", value, row)
            elif not isinstance(value, list) and metric != "suppressed":
                rows.append(
                    {"section": section, "item": item, "metric": metric, "value": str(shown(value, row, report))}
                )

    add("totals", "all", report["totals"])
    for rule in report["rules"]:
        add("rules", rule["rule_id"], {k: v for k, v in rule.items() if k != "rule_id"})
    for dimension, items in report["breakdowns"].items():
        for item in items:
            add(f"by_{dimension}", str(item["value"]), {k: v for k, v in item.items() if k != "value"})
    for insurer in report["data_quality"]:
        add("data_quality", insurer["insurer_code"], {k: v for k, v in insurer.items() if k != "insurer_code"})
    for package in report["software"]:
        add("software", package["software_id"], {k: v for k, v in package.items() if k != "software_id"})
    for indicator in report["insurer_indicators"]:
        item = f"{indicator['insurer_code']}/{indicator['indicator']}"
        add("insurer_indicators", item, {k: v for k, v in indicator.items() if k not in ("insurer_code", "indicator")})
    add("anomaly_detection", "all", report["anomaly_detection"])
    add("cases", "all", report["cases"])
    for campaign in report["sensitisation"]:
        add("sensitisation", campaign["name"], {k: v for k, v in campaign.items() if k != "name"})
    for target in report["targets"]:
        add("targets", target["figure"], {k: v for k, v in target.items() if k != "figure"})
    for change in report["year_over_year"]:
        add("year_over_year", change["rule_id"], {k: v for k, v in change.items() if k != "rule_id"})
    for matching in report["datamatchings"]:
        add(
            "datamatchings",
            matching["rule_id"],
            {
                **{k: v for k, v in matching.items() if k != "rule_id"},
                "data_sources": ", ".join(matching["data_sources"]),
                "run_dates": ", ".join(matching["run_dates"]),
            },
        )
    return pl.DataFrame(rows, schema={"section": pl.String, "item": pl.String, "metric": pl.String, "value": pl.String})


def _sheets(report: dict[str, Any]) -> dict[str, pl.DataFrame]:
    sheets = {"rules": pl.DataFrame(report["rules"]), "year_over_year": pl.DataFrame(report["year_over_year"])}
    sheets |= {f"by_{d}": pl.DataFrame(items) for d, items in report["breakdowns"].items() if items}
    quality = [
        {
            **{k: v for k, v in q.items() if not isinstance(v, dict)},
            # An insurer's total would give its suppressed reasons away.
            "quarantined_rows": None if q.get("suppressed") else sum(q["quarantined_rows_by_reason"].values()),
        }
        for q in report["data_quality"]
    ]
    if quality:
        sheets["data_quality"] = pl.DataFrame(quality)
    if report["insurer_indicators"]:
        sheets["insurer_indicators"] = pl.DataFrame(
            report["insurer_indicators"], schema_overrides={"numerator": pl.Float64, "denominator": pl.Float64}
        )
    if report["software"]:
        sheets["software"] = pl.DataFrame(report["software"])
    sheets["cases"] = pl.DataFrame([report["cases"]])
    if report["sensitisation"]:
        measured = dict.fromkeys(("effect", "ci_low", "ci_high"), pl.Float64)  # none until a later run
        sheets["sensitisation"] = pl.DataFrame(report["sensitisation"], schema_overrides=measured)
    sheets["anomaly_detection"] = pl.DataFrame([report["anomaly_detection"]])
    if report["targets"]:
        sheets["targets"] = pl.DataFrame(report["targets"], schema_overrides={"actual": pl.Float64})
    sheets["datamatchings"] = pl.DataFrame(
        [
            {**m, "data_sources": ", ".join(m["data_sources"]), "run_dates": ", ".join(m["run_dates"])}
            for m in report["datamatchings"]
        ]
    )
    return sheets


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode()


def _charts(report: dict[str, Any]) -> list[tuple[str, str]]:
    words = texts()[report.get("lang", "en")]["report"]
    year = report["year"]
    rules = [r["rule_id"] for r in report["rules"]]
    trend = Figure(figsize=(7, 3.2))
    axis = trend.subplots()
    positions = range(len(rules))
    previous = [c["previous_amount_at_stake_eur"] or 0.0 for c in report["year_over_year"]]
    current = [r["amount_at_stake_eur"] or 0.0 for r in report["rules"]]
    axis.barh([p + 0.2 for p in positions], previous, height=0.4, label=str(year - 1), color="#9db4cf")
    axis.barh([p - 0.2 for p in positions], current, height=0.4, label=str(year), color="#1f4e79")
    axis.set(yticks=list(positions), yticklabels=[_label(r) for r in rules], xlabel=words["amount_axis"])
    axis.legend()
    charts = [(words["per_rule_chart"].format(previous=year - 1, year=year), _png(trend))]
    for dimension in ("profession", "region"):
        items = report["breakdowns"][dimension]
        figure = Figure(figsize=(7, 2.6))
        axis = figure.subplots()
        axis.barh(
            [_label(i["value"]) for i in items][::-1],
            [i["amount_at_stake_eur"] or 0.0 for i in items][::-1],
            color="#2e7d5b",
        )
        axis.set(xlabel=words["amount_axis"])
        charts.append((words["by_chart"].format(dimension=words["dimensions"][dimension]), _png(figure)))
    quality = report["data_quality"]
    figure = Figure(figsize=(7, 2.6))
    axis = figure.subplots()
    axis.bar(
        [_label(q["insurer_code"]) for q in quality],
        [(q["pseudo_number_rate"] or 0.0) * 100 for q in quality],
        color="#a5533b",
    )
    axis.set(ylabel=words["pseudo_axis"], xlabel=words["insurer_axis"])
    charts.append((words["pseudo_chart"], _png(figure)))
    return charts


def _table(rows: list[dict[str, Any]], report: dict[str, Any]) -> str:
    if not rows:
        return "<p>None.</p>"
    columns = [k for k in rows[0] if k != "suppressed"]
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(shown(row.get(k), row, report)))}</td>" for k in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return "; ".join(f"{k}: {'suppressed' if v is None else v}" for k, v in value.items())
    return str(value)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } img { max-width: 100%; }
@media print { body { margin: 0; } h2 { break-after: avoid; } table, figure { break-inside: avoid; } }
"""


def to_html(report: dict[str, Any]) -> str:
    lang = report.get("lang", "en")
    words = texts()[lang]["report"]
    sections = words["sections"]
    year, totals = report["year"], report["totals"]
    charts = "".join(
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{p}"><figcaption>{html.escape(t)}</figcaption></figure>'
        for t, p in _charts(report)
    )
    tables = [
        (sections["rules"], _table(report["rules"], report)),
        (sections["year_over_year"], _table(report["year_over_year"], report)),
        *(
            (sections["by"].format(dimension=words["dimensions"][d]), _table(items, report))
            for d, items in report["breakdowns"].items()
        ),
        (sections["data_quality"], _table(report["data_quality"], report)),
        (sections["insurer_indicators"], _table(report["insurer_indicators"], report)),
        (sections["software"], _table(report["software"], report)),
        (sections["anomaly_detection"], _table([report["anomaly_detection"]], report)),
        (sections["cases"], _table([report["cases"]], report)),
        (sections["sensitisation"], _table(report["sensitisation"], report)),
        (sections["datamatchings"], _table(report["datamatchings"], report)),
        (sections["targets"], _table(report["targets"], report)),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in tables)
    summary = words["summary"].format(
        basis=words["basis"][report["basis"]],
        lines=formats.number(totals["lines_flagged"], lang),
        providers=formats.number(totals["providers"], lang),
        amount=formats.amount(totals["amount_at_stake_eur"], lang),
        billed=formats.amount(report["billed_amount_eur"], lang),
    )
    title = words["title"].format(year=year)
    return (
        f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(summary)}</p>{charts}{body}</body></html>"
    )


def export(report: dict[str, Any], fmt: str, out: Path) -> None:
    """Write ``report`` to ``out`` as ``fmt`` (json, csv, xlsx or html)."""
    if fmt not in FORMATS:
        msg = f"Unknown format '{fmt}'; formats: {', '.join(FORMATS)}"
        raise ValueError(msg)
    if fmt == "json":
        out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    elif fmt == "csv":
        inert(long_rows(report)).write_csv(out)
    elif fmt == "xlsx":
        from xlsxwriter import Workbook

        # Text is never written as a formula, and is made inert for whoever edits the cell.
        with Workbook(str(out), {"strings_to_formulas": False}) as workbook:
            for name, frame in _sheets(report).items():
                inert(frame).write_excel(workbook, worksheet=name[:31], autofit=True)
    else:
        out.write_text(to_html(report), encoding="utf-8")

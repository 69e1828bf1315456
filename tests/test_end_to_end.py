"""Generated data through the CLI: the labels are recovered exactly, outputs reconcile."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from secm import ALLOCATOR_SETTING, BATCH_ALLOCATOR, POLARS_ALLOCATOR_DEFAULT
from secm.cli import app
from secm.pipeline import run as run_pipeline
from secm.synth import generate
from secm.synth.labels import mismatches
from tests.interpreter import fresh_output

runner = CliRunner()


@pytest.mark.parametrize("legislation", ["current", "reform_art174"])
def test_rules_recover_the_generator_labels_exactly(synthetic: Path, tmp_path: Path, legislation: str) -> None:
    result = runner.invoke(app, ["run", "--data", str(synthetic), "--out", str(tmp_path), "--legislation", legislation])
    assert result.exit_code == 0, result.output
    flags = pl.read_parquet(tmp_path / "flags.parquet")
    wrong = mismatches(flags, synthetic, legislation)
    assert wrong.is_empty(), wrong.group_by("side", "rule_id", "reason").len()  # precision = recall = 1
    assert flags.select(pl.col("amount_at_stake_eur").is_null().sum()).item() == 0


def test_run_json_reconciles_tables_quarantine_and_rules(synthetic: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["run", "--data", str(synthetic), "--out", str(tmp_path)]).exit_code == 0
    info = json.loads((tmp_path / "run.json").read_text())
    quarantine = pl.read_parquet(tmp_path / "quarantine.parquet")
    flags = pl.read_parquet(tmp_path / "flags.parquet")
    assert info["legislation"] == "current"
    for name, stats in info["tables"].items():
        assert stats["rows_read"] == stats["rows_valid"] + stats["rows_quarantined"]
        assert stats["rows_quarantined"] == quarantine.filter(pl.col("table") == name).height
    assert info["tables"]["billing_lines"]["rows_read"] == 30_000
    for rule_id, summary in info["rules"].items():
        rows = flags.filter(pl.col("rule_id") == rule_id)
        assert summary["lines_flagged"] == rows.height
        assert summary["amount_at_stake_eur"] == pytest.approx(rows["amount_at_stake_eur"].sum())
    fairness = info["fairness"]
    assert fairness["profiles"] == info["detector"]["profiles_scored"]
    regions = [g for g in fairness["groups"] if g["dimension"] == "region"]
    assert sum(g["profiles"] for g in regions) == fairness["profiles"]
    assert {g["dimension"] for g in fairness["groups"]} == {"region", "language", "insurer", "practice_size"}
    expected = pl.read_parquet(synthetic / "labels" / "quarantine.parquet")
    got = quarantine.explode("reasons")
    for table, reason in expected.select("table", "reason").iter_rows():
        assert got.filter((pl.col("table") == table) & (pl.col("reasons") == reason)).height >= 1, reason


def test_whatif_reports_what_the_reform_adds(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "whatif.csv"
    result = runner.invoke(
        app, ["whatif", "--data", str(synthetic), "--legislation", "reform_art174", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out)
    labels = pl.read_parquet(synthetic / "labels" / "flags.parquet").filter(pl.col("rule_id") == "LATE_ATTESTATION")
    newly = (
        labels.filter(pl.col("legislation") == "reform_art174").height
        - labels.filter(pl.col("legislation") == "current").height
    )
    assert table.filter(pl.col("change") == "newly_flagged")["lines"].sum() == newly
    assert set(table["rule_id"]) == {"LATE_ATTESTATION"}


def test_generator_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate(tmp_path / name, n_lines=5_000, seed=3)
    for part in sorted((tmp_path / "a").rglob("*.parquet")):
        twin = tmp_path / "b" / part.relative_to(tmp_path / "a")
        assert pl.read_parquet(part).equals(pl.read_parquet(twin)), part.name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--data", "/nonexistent", "--out", "x"], "does not exist"),
        (["run", "--data", ".", "--out", "x", "--legislation", "reform_2030"], "Unknown legislation 'reform_2030'"),
        (["synth", "--out", "x", "--format", "xml"], "--format must be parquet or csv"),
        (["synth", "--out", "x", "--anomaly-strength", "huge"], "Unknown anomaly strength 'huge'"),
        (["synth", "--out", "x", "--anomalies", "upcoding,fraud"], "Unknown anomaly kind(s) ['fraud']"),
        (["synth", "--out", "x", "--lines", "5000", "--practice-size", "100"], "--lines or --practice-size"),
        (["detect", "--features", "nope.csv", "--id", "x", "--out", "o.csv"], "No feature table at nope.csv"),
        (["detect", "--features", "README.md", "--id", "x", "--out", "o.csv"], "Cannot read the feature table"),
    ],
)
def test_cli_errors_are_one_line_and_non_zero(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/nonexistent"], "does not exist"),
        (["--data", "{tmp}"], "has no table 'providers'"),
        (["--data", "{tmp}", "--legislation", "reform_2030"], "Unknown legislation 'reform_2030'"),
    ],
)
def test_a_run_stopped_at_its_arguments_creates_no_database(tmp_path: Path, args: list[str], message: str) -> None:
    """A mistyped folder or legislation is found before the run opens the application database
    (a new SQLite file under ``SECM_HOME``, by default)."""
    args = [a.format(tmp=tmp_path) for a in args]
    result = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert message in result.output
    for thread in threading.enumerate():  # a database being opened would be by now
        if thread.name.startswith("secm-database"):
            thread.join()
    assert not list((tmp_path / "secm-home").rglob("*.db"))


@pytest.mark.parametrize(
    ("parent", "command", "in_effect"),
    [
        (None, "run", BATCH_ALLOCATOR),
        ("import polars", "run", BATCH_ALLOCATOR),
        ("import secm, polars", "run", BATCH_ALLOCATOR),
        (None, "serve", POLARS_ALLOCATOR_DEFAULT),
        ("import secm, polars", "serve", POLARS_ALLOCATOR_DEFAULT),
        (None, "-v serve", POLARS_ALLOCATOR_DEFAULT),
        ("dirty_decay_ms:0", "run", "dirty_decay_ms:0"),
    ],
)
def test_the_command_line_keeps_freed_memory_for_reuse_unless_told_otherwise(
    parent: str | None, command: str, in_effect: str
) -> None:
    """Polars composes its allocator's options when it is imported, its defaults first and
    then the environment's, the last of each winning: ``secm`` sets its own before, for every
    command but the service. ``parent``: the environment a process hands on after these
    imports, or the user's own options."""

    def options_after(imports: str, setting: str | None) -> str:
        return fresh_output(
            f"import os; {imports}; print(os.environ[{ALLOCATOR_SETTING!r}])", {ALLOCATOR_SETTING: setting}
        )

    if parent and parent.startswith("import"):
        parent = options_after(parent, None)
    options = options_after(f"import sys; sys.argv[1:] = {command.split()!r}; import secm.cli, polars", parent)
    assert options == f"{POLARS_ALLOCATOR_DEFAULT},{in_effect}"


def test_synth_options_shape_practices_and_anomalies(tmp_path: Path) -> None:
    """Practice size, years, kinds and strength do what their names say, measured on the profiles."""
    from secm.pipeline import profiles_of

    out = tmp_path / "data"
    args = ["synth", "--out", str(out), "--providers", "400", "--practice-size", "120", "--years", "1"]
    args += ["--anomalies", "evening_share,phantom_patients", "--anomaly-share", "0.03", "--seed", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    labels = pl.read_parquet(out / "labels" / "providers.parquet")
    assert set(labels["anomaly"]) == {"evening_share", "phantom_patients"}
    assert labels["intensity"].is_not_null().all()
    profiles = profiles_of(out).join(labels, on="provider_nihdi", how="left")
    busy = profiles.filter(pl.col("period") == "2023")
    assert 90 <= busy["patients"].median() <= 150  # type: ignore[operator]
    ordinary_gp = busy.filter(pl.col("anomaly").is_null() & (pl.col("profession") == "gp"))
    evening = busy.filter(pl.col("anomaly") == "evening_share")
    phantom = busy.filter(pl.col("anomaly") == "phantom_patients")
    # Realistic strength: an evening share of 12 to 18 % against about 5 %; phantom patients
    # seen once make up far more of the patient list than usual.
    assert 0.03 < ordinary_gp["evening_share"].median() < 0.08  # type: ignore[operator]
    assert 0.11 < evening["evening_share"].median() < 0.2  # type: ignore[operator]
    assert phantom["share_patients_seen_once"].median() > 1.5 * busy["share_patients_seen_once"].median()  # type: ignore[operator]


def test_a_run_imports_what_it_needs_later_while_it_works() -> None:
    """A run starts importing the enrichment's calendar and the fairness report's tests in a
    thread, so that neither waits for them; the caller's own thread stays free meanwhile."""
    script = (
        "import sys, time\n"
        "from secm.pipeline import LATER_IMPORTS, import_meanwhile\n"
        "assert not any(m in sys.modules for m in ('holidays', 'scipy.stats')), 'imported already'\n"
        "started = time.perf_counter()\n"
        "import_meanwhile()\n"
        "returned = time.perf_counter() - started\n"
        "while not all(m in sys.modules for m in LATER_IMPORTS) or not hasattr(sys.modules['scipy.stats'], 'mannwhitneyu'):\n"
        "    if time.perf_counter() - started > 30:\n"
        "        sys.exit('never imported')\n"
        "    time.sleep(0.01)\n"
        "import holidays\n"
        "assert holidays.country_holidays('BE', years=2024).get('2024-07-21') is not None\n"
        "print(returned)\n"
    )
    assert float(fresh_output(script)) < 0.05  # it returned at once: the imports happen in the thread


def test_a_run_as_a_process_closes_its_database_before_it_exits(synthetic: Path, tmp_path: Path) -> None:
    """The command leaves its objects to the system at exit, uncollected: the connection to
    the application database must be closed before, or SQLite's write-ahead log is left
    beside it, never checkpointed."""
    home = tmp_path / "secm-home"
    program = f"import sys\nfrom secm.cli import app\nsys.argv = ['secm', 'run', '--data', {str(synthetic)!r}, '--out', {str(tmp_path / 'out')!r}]\napp()\n"
    fresh_output(program, {"SECM_HOME": str(home)})
    assert (tmp_path / "out" / "run.json").exists()
    assert sorted(p.name for p in home.iterdir() if p.name.startswith("secm.db")) == ["secm.db"]


UNREACHABLE = "postgresql://nobody:secret@127.0.0.1:1/none"  # nothing listens on port 1


def test_a_run_that_cannot_open_its_database_stops_before_its_work(synthetic: Path, tmp_path: Path) -> None:
    """The database is opened while the run starts its work, and its error ends the run at the
    next step, not once every line was evaluated."""
    steps: list[str] = []

    def on_step(message: str) -> None:
        steps.append(message)
        time.sleep(0.3)  # meanwhile the database's thread meets the refused connection

    with pytest.raises(OperationalError, match="Connection refused"):
        run_pipeline(synthetic, tmp_path / "out", on_step=on_step, publish_to=UNREACHABLE)
    assert set(steps) <= {"Loading and validating"}  # at the latest at the step after loading
    assert not (tmp_path / "out" / "flags.parquet").exists()


def test_a_database_error_is_one_line_naming_the_setting(synthetic: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "--data", str(synthetic), "--out", str(tmp_path / "out")], env={"SECM_DATABASE_URL": UNREACHABLE}
    )
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert errors[0].startswith("error: the application database (SECM_DATABASE_URL) failed: connection failed")
    assert "Connection refused" in errors[0]
    assert "secret" not in result.output  # the password in the URL
    assert "sqlalche.me" not in result.output

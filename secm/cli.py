"""The ``secm`` command line: the only place that turns errors into exit codes."""

from __future__ import annotations

import atexit
import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from data_contracts import ContractError, TableStats
from data_contracts.errors import OutputError
from data_contracts.partitions import LINES_PER_PARTITION, Engine
from rules import RuleError, load_catalog

app = typer.Typer(
    help="Billing control for the Belgian health insurance (SECM): validate, flag, score, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
log = logging.getLogger("secm")

Legislation = Annotated[str, typer.Option(help="Legislation version of the rule parameters: current or reform_art174.")]
EffectiveFrom = Annotated[
    datetime | None,
    typer.Option(
        formats=["%Y-%m-%d"],
        help="First date of service the legislation governs (earlier lines follow current); "
        "default: the catalog's, else every line.",
    ),
]


@contextmanager
def _clean_errors() -> Iterator[None]:
    """Expected failures end as one line on stderr and exit code 1, never a traceback."""
    try:
        yield
    except (
        ContractError,
        RuleError,
        ValueError,
        FileNotFoundError,
        PermissionError,
        OutputError,
        SQLAlchemyError,
    ) as exc:
        message = _database_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
        console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1) from None


def _database_error(exc: SQLAlchemyError) -> str:
    """A database's error in one line: the driver's first line, without SQLAlchemy's wrapping
    (the driver's class, the statement, a link to SQLAlchemy's documentation)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"the application database (SECM_DATABASE_URL) failed: {lines[0] if lines else type(cause).__name__}"


# What secm writes under SECM_HOME (token hashes, cases, evidence, runs) is readable by its
# own user only: files 0600, folders 0700.
PRIVATE_UMASK = 0o077


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False) -> None:
    os.umask(PRIVATE_UMASK)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the dataset to.")],
    lines: Annotated[
        int | None, typer.Option(min=1000, help="Billing lines to generate (default 100 000, or from --practice-size).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 42,
    first_year: Annotated[int, typer.Option(help="First service year.")] = 2023,
    years: Annotated[int, typer.Option(min=1, max=3, help="Years of background billing.")] = 2,
    providers: Annotated[
        int | None,
        typer.Option(min=80, help="Providers (default: one per 2 500 lines and year); sets peer-group sizes."),
    ] = None,
    practice_size: Annotated[
        int | None,
        typer.Option(
            min=10, help="Median patients a year per provider; sets --lines from --providers (default 1 000)."
        ),
    ] = None,
    anomalies: Annotated[
        str,
        typer.Option(
            help="Anomaly kinds, comma-separated: upcoding, excessive_volume, phantom_patients, evening_share; "
            "all, or none."
        ),
    ] = "all",
    anomaly_share: Annotated[float, typer.Option(help="Share of providers per anomaly kind.")] = 0.005,
    anomaly_strength: Annotated[str, typer.Option(help="subtle, realistic or blatant.")] = "realistic",
    atypical_share: Annotated[
        float,
        typer.Option(
            help="Share of ordinary GPs per kind of legitimately atypical practice: on night duty, "
            "in nursing homes, on rural home-visit rounds."
        ),
    ] = 0.02,
    format: Annotated[str, typer.Option(help="parquet or csv.")] = "parquet",
) -> None:
    """Generate a synthetic dataset with labelled scenarios (labels/ beside the tables)."""
    from secm.synth import AnomalySettings, generate, lines_for_practice
    from secm.synth.anomalies import KINDS

    with _clean_errors():
        if format not in ("parquet", "csv"):
            raise ValueError(f"--format must be parquet or csv, not {format!r}")
        if practice_size and lines:
            raise ValueError("Give --lines or --practice-size, not both")
        kinds = [k.strip() for k in anomalies.split(",") if k.strip() not in ("", "none")]
        settings = AnomalySettings(
            kinds=KINDS if kinds == ["all"] else tuple(kinds),
            share=anomaly_share,
            strength=anomaly_strength,
            atypical=atypical_share,
        )
        n_providers: int | None = providers
        total = lines or 100_000
        if practice_size:
            n_providers = providers or 1000
            total = lines_for_practice(n_providers, practice_size, years)
        with _progress() as progress:
            task = progress.add_task("Generating lines", total=total)
            summary = generate(
                out,
                n_lines=total,
                seed=seed,
                first_year=first_year,
                fmt=format,
                progress=lambda n: progress.advance(task, n),
                n_providers=n_providers,
                years=years,
                anomaly_settings=settings,
            )
    console.print(
        f"Wrote {summary.lines:,} lines, {summary.providers:,} providers, {summary.invoices:,} invoices "
        f"to {out} ({summary.labelled_flags} labelled flags, {summary.anomalous_providers} anomalous providers)."
    )


@app.command()
def run(
    data: Annotated[Path, typer.Option(help="Dataset folder (see the data contract).")],
    out: Annotated[Path, typer.Option(help="Folder for flags.parquet, quarantine.parquet, run.json.")],
    legislation: Legislation = "current",
    effective_from: EffectiveFrom = None,
    catalog: Annotated[Path | None, typer.Option(help="Rule catalog YAML (default: the shipped one).")] = None,
    publish: Annotated[
        bool, typer.Option(help="Publish the run to the application database (SECM_DATABASE_URL) for the service.")
    ] = True,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Process the billing lines in this many partitions by provider, one at a time, to bound memory "
            f"(default: one per {LINES_PER_PARTITION:,} lines, and with --engine spark at least one per core; "
            "1: all at once). The results do not depend on it.",
        ),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(help="polars: partitions one after the other here; spark: side by side in Spark tasks."),
    ] = "polars",
    spark_master: Annotated[
        str | None,
        typer.Option(help="With --engine spark: the Spark master (default: spark-submit's --master, else local[*])."),
    ] = None,
) -> None:
    """Validate a dataset, run the rule catalog, score providers, publish the results."""
    from secm.pipeline import run as run_pipeline
    from secm.settings import get_settings

    with _clean_errors(), _progress() as progress:
        task = progress.add_task("Starting", total=None)

        def on_table(name: str, stats: TableStats) -> None:
            progress.update(task, description=f"Validated {name}")

        result = run_pipeline(
            data,
            out,
            legislation=legislation,
            effective_from=effective_from.date() if effective_from else None,
            catalog_path=catalog,
            partitions=partitions,
            engine=engine,
            spark_master=spark_master,
            on_step=lambda s: progress.update(task, description=s),
            on_table=on_table,
            publish_to=get_settings().effective_database_url if publish else None,
        )
    _print_tables(result.info["tables"])
    _print_rules(result.info["rules"], legislation)
    detector = result.info["detector"]
    console.print(
        f"Scored {detector['profiles_scored']:,} provider profiles with {detector['model']}: {detector['source']}."
    )
    published = " and published to the application database" if publish else ""
    timings = result.info["timings"]
    console.print(f"Outputs in {out}{published} ({timings['total_seconds']:.1f}s).")
    stages = ", ".join(
        f"{name.removesuffix('_seconds').replace('_', ' ')} {seconds:.1f}s" for name, seconds in timings.items()
    )
    count = result.info["partitions"]
    where = "lines read whole" if count == 1 and engine == "polars" else f"{count} partition{'s' * (count > 1)}"
    console.print(f"Stages ({where}{' on Spark, summed over its tasks' if engine == 'spark' else ''}): {stages}.")
    if publish:
        from api.database import migrate
        from secm.purge import expire_raw_values

        settings = get_settings()
        with _clean_errors():
            database = migrate(settings.effective_database_url)
            try:
                with database.begin() as connection:
                    expired = expire_raw_values(connection, settings.retention_days)
            finally:
                database.dispose()  # closed here, not by the collection at exit (see below)
        if expired:
            console.print(
                f"Raw values of quarantined rows blanked in {len(expired)} run(s) older than "
                f"{settings.retention_days} days (SECM_RETENTION_DAYS)."
            )
    # At exit, what the run made and imported is left to the system, not walked object by
    # object by the interpreter's last collection: 0.2-0.3 s of a run. Whatever needed that
    # collection to be closed (the database connection) was closed above. At exit only: a
    # process that goes on (a test calling the command) keeps collecting its garbage.
    atexit.register(gc.freeze)


@app.command()
def purge(
    before: Annotated[
        datetime, typer.Option(formats=["%Y-%m-%d"], help="Remove runs and models made before this date.")
    ],
    by: Annotated[str | None, typer.Option(help="Who purges (default: the system user); audited.")] = None,
) -> None:
    """Remove published runs made before a date (database rows and output files) and MLflow
    training runs started before it; keep what a case, a campaign or the champion relies on."""
    import getpass

    from secm.purge import purge as purge_before

    with _clean_errors():
        done = purge_before(before.date(), by or getpass.getuser())
    console.print(
        f"Purged {len(done.runs)} run(s), {len(done.outputs)} output folder(s), {len(done.mlflow_runs)} MLflow "
        f"training run(s) and {len(done.model_versions)} model version(s) made before {before.date()}."
    )
    for what, why in done.kept.items():
        console.print(f"Kept {what}: {why}.")
    if done.raw_values_expired:
        console.print(f"Raw values of quarantined rows blanked in {len(done.raw_values_expired)} older run(s).")


@app.command()
def whatif(
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    legislation: Legislation = "reform_art174",
    effective_from: EffectiveFrom = None,
    against: Annotated[str, typer.Option(help="Baseline legislation.")] = "current",
    against_effective_from: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="First date of service the baseline governs (default: the catalog's)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="CSV file for the table (default: whatif_<legislation>.csv).")
    ] = None,
) -> None:
    """What a legislation timeline changes against the baseline's: lines, providers, amounts."""
    from data_contracts import load_dataset
    from rules import whatif as compute_whatif

    with _clean_errors(), _progress() as progress:
        progress.add_task("Loading and evaluating both legislations", total=None)
        dataset = load_dataset(data)
        tables = dataset.lazy_tables()
        changes = compute_whatif(
            tables,
            legislation=legislation,
            baseline=against,
            effective_from=effective_from.date() if effective_from else None,
            baseline_effective_from=against_effective_from.date() if against_effective_from else None,
        )
    target = out or Path(f"whatif_{legislation}.csv")
    changes.write_csv(target)
    table = Table(title=f"{legislation} against {against}")
    for column in changes.columns:
        table.add_column(column, justify="right" if changes[column].dtype.is_numeric() else "left")
    for row in changes.iter_rows():
        table.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
    totals = changes.group_by("change").agg(pl.col("lines").sum(), pl.col("amount_at_stake_eur").sum())
    Console().print(table)
    for change, n, amount in totals.sort("change").iter_rows():
        console.print(f"{change}: {n:,} lines, {amount:,.2f} EUR at stake")
    console.print(f"Written to {target}.")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Dataset folder.")],
    labels: Annotated[
        Path | None, typer.Option(help="Labelled anomalous providers (default: DATA/labels/providers.parquet).")
    ] = None,
    detector: Annotated[
        list[str] | None, typer.Option(help="Detector to train (repeat; default: peer_evidence and the whole zoo).")
    ] = None,
    metric: Annotated[str, typer.Option(help="roc_auc, average_precision or precision_at_k.")] = "roc_auc",
    promote: Annotated[bool, typer.Option(help="Make the best run by --metric the champion.")] = False,
    approved_by: Annotated[
        str | None,
        typer.Option(help="Who approves the promotion (needed with --promote): kept with the model and audited."),
    ] = None,
    period: Annotated[str, typer.Option(help="Profile period: year or quarter.")] = "year",
    peer_columns: Annotated[
        str, typer.Option(help="Peer grouping, comma-separated.")
    ] = "profession,qualification,region",
    min_peers: Annotated[int, typer.Option(min=2, help="Smallest peer group before falling back to a wider one.")] = 20,
    verdicts: Annotated[
        bool,
        typer.Option(help="Let the outcomes of closed cases (SECM_DATABASE_URL) guide the default detector."),
    ] = True,
) -> None:
    """Train and compare the detector zoo on a dataset's provider profiles, tracked in MLflow."""
    from detectors.scoring import DETECTORS
    from detectors.tracking import best, duel, train_zoo
    from secm.champion import approve
    from secm.pipeline import training_data

    with _clean_errors():
        if period not in ("year", "quarter"):
            raise ValueError(f"--period must be year or quarter, not {period!r}")
        if promote and not (approved_by or "").strip():
            raise ValueError("--promote needs --approved-by NAME: a champion is approved by someone, who is recorded")
        unknown = set(detector or []) - set(DETECTORS)
        if unknown:
            raise ValueError(f"Unknown detector(s) {sorted(unknown)}; known: {', '.join(DETECTORS)}")
        label_file = labels or data / "labels" / "providers.parquet"
        if labels and not labels.exists():
            raise FileNotFoundError(f"No labels file at {labels}")
        with _progress() as progress:
            task = progress.add_task("Building provider profiles", total=None)
            peers = [c.strip() for c in peer_columns.split(",") if c.strip()]
            profiles, attributes = training_data(data, period=period)  # type: ignore[arg-type]
            if profiles.is_empty():
                raise ValueError(
                    f"Nothing to train on: {data} has no valid billing line (secm run lists what was quarantined)"
                )
            truth = pl.read_parquet(label_file) if label_file.exists() else None
            outcomes = _verdicts() if verdicts else None
            runs = train_zoo(
                profiles,
                labels=truth,
                detectors=detector or DETECTORS,
                peer_columns=peers,
                min_peers=min_peers,
                period=period,
                on_detector=lambda name: progress.update(task, description=f"Training {name}"),
                verdicts=outcomes,
                attributes=attributes,
                labels_source=str(label_file),
            )
        guided = f", guided by {outcomes.height:,} closed cases" if outcomes is not None else ""
        table = Table(
            title=f"{profiles.height:,} provider profiles" + ("" if truth is not None else " (no labels)") + guided
        )
        for column in ("detector", "version", "roc_auc", "average_precision", "precision_at_k", "run"):
            table.add_column(column)
        for r in runs:
            cells = [
                f"{r.metrics[m]:.3f}" if m in r.metrics else "-"
                for m in ("roc_auc", "average_precision", "precision_at_k")
            ]
            table.add_row(r.detector, r.version, *cells, r.run_id)
        Console().print(table)
        if promote:
            winner = best(runs, metric)
            if outcomes is not None:
                match = duel(profiles, outcomes, winner.detector, peer_columns=peers, min_peers=min_peers)
                champion = "none" if match.champion is None else f"{match.champion:.3f}"
                console.print(
                    f"On {match.held_out} held-out verdicts, average precision: {winner.detector} "
                    f"{match.candidate:.3f}, champion {champion}."
                )
                if not match.candidate_wins:
                    console.print("The champion stays: the candidate does not beat it on held-out verdicts.")
                    return
            assert approved_by is not None
            detail = {"detector": winner.detector, "metric": metric, "value": round(winner.metrics[metric], 4)}
            approve(winner.version, approved_by, detail)
            console.print(
                f"Champion: {winner.detector} (version {winner.version}, {metric} {winner.metrics[metric]:.3f}), "
                f"approved by {approved_by.strip()}."
            )


def _verdicts() -> pl.DataFrame | None:
    """Closed cases per provider (``confirmed`` or not) from the application database, if any."""
    from api.database import migrate
    from api.queries import verdicts
    from secm.settings import get_settings

    with migrate(get_settings().effective_database_url).begin() as connection:
        rows = verdicts(connection)
    if not rows:
        return None
    return pl.DataFrame(rows).with_columns(pl.col("confirmed").cast(pl.Boolean))


@app.command()
def detect(
    features: Annotated[Path, typer.Option(help="CSV or Parquet table: one row per id, numeric features.")],
    id: Annotated[str, typer.Option("--id", help="Column identifying each row.")],
    out: Annotated[Path, typer.Option(help="Output file (.csv or .parquet): id, score, rank.")],
    peer_group: Annotated[str | None, typer.Option(help="Column to normalise features within.")] = None,
    detector: Annotated[str, typer.Option(help="A zoo detector name, or ensemble.")] = "ensemble",
    labels: Annotated[
        Path | None,
        typer.Option(help="CSV or Parquet: the id column and --label-column, for the ids already investigated."),
    ] = None,
    label_column: Annotated[
        str, typer.Option(help="Label column: true, 1, yes or confirmed mean a confirmed case.")
    ] = "confirmed",
) -> None:
    """Score any provider x numeric-feature table with the detector zoo, guided by labels if given."""
    from detectors.scoring import score_table

    with _clean_errors():
        table = _read_table(features, "feature table")
        known = _labels(labels, id, label_column) if labels else None
        scores = score_table(table, id, peer_group=peer_group, detector=detector, labels=known)
        if out.suffix == ".parquet":
            scores.write_parquet(out)
        else:
            scores.write_csv(out)
    guided = f", guided by {known.height:,} labels" if known is not None else ""
    console.print(f"Scored {scores.height:,} rows with {detector}{guided}; written to {out}.")


def _read_table(path: Path, what: str) -> pl.DataFrame:
    """A CSV or Parquet file; a missing or unreadable one is a one-line error naming it."""
    if not path.exists():
        raise FileNotFoundError(f"No {what} at {path}")
    try:
        return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=10_000)
    except pl.exceptions.PolarsError as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"Cannot read the {what} {path} as CSV or Parquet: {reason}") from error


def _labels(path: Path, id_column: str, label_column: str) -> pl.DataFrame:
    """``id_column`` and ``confirmed`` (bool) from a labels file."""
    frame = _read_table(path, "labels file")
    missing = [c for c in (id_column, label_column) if c not in frame.columns]
    if missing:
        raise ValueError(f"The labels file {path} has no column(s) {missing}; it has {', '.join(frame.columns)}")
    positive = pl.col(label_column).cast(pl.String).str.to_lowercase().is_in(["true", "1", "yes", "confirmed"])
    return frame.select(id_column, positive.alias("confirmed")).unique(id_column)


token_app = typer.Typer(help="Create, list and revoke the service's bearer tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="inspector, data_scientist, sca or admin.")],
    name: Annotated[str | None, typer.Option(help="A unique name (default: the role and a suffix).")] = None,
    expires_in: Annotated[
        str, typer.Option(help="Lifetime: days, hours or minutes (90d, 12h, 30m), or 'never'.")
    ] = "90d",
) -> None:
    """Create a token; it is printed once, alone on the last line, and stored only hashed."""
    from api.auth import create_token, parse_duration
    from api.database import migrate
    from secm.settings import get_settings

    with _clean_errors():
        lifetime = None if expires_in == "never" else parse_duration(expires_in)
        name, token = create_token(migrate(get_settings().effective_database_url), role, name, lifetime)
    until = f"valid for {expires_in}" if lifetime else "valid until revoked"
    console.print(f"Token '{name}' with role {role}, {until} (keep it: it is not stored and cannot be shown again):")
    typer.echo(token)


@token_app.command("list")
def token_list() -> None:
    """Every token with its role, creation, expiry, last use and revocation (never the token)."""
    from api.auth import list_tokens
    from api.database import migrate
    from secm.settings import get_settings

    with _clean_errors():
        tokens = list_tokens(migrate(get_settings().effective_database_url))
    table = Table("name", "role", "created", "expires", "last used", "revoked")
    for row in tokens:
        moments = (row[c] for c in ("created_at", "expires_at", "last_used_at", "revoked_at"))
        table.add_row(row["name"], row["role"], *(f"{m:%Y-%m-%d %H:%M}" if m else "-" for m in moments))
    console.print(table)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Option(help="The token's name.")]) -> None:
    """Revoke a token by name; it stops working at once."""
    from api.auth import revoke_token
    from api.database import migrate
    from secm.settings import get_settings

    with _clean_errors():
        revoke_token(migrate(get_settings().effective_database_url), name)
    console.print(f"Revoked token '{name}'.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Server processes behind the port (default: the machine's cores).")
    ] = None,
) -> None:
    """Serve the HTTP API over the application database (SECM_DATABASE_URL).

    Each process lets SECM_SERVE_CONCURRENCY requests work at once (default 4) and answers
    503 with Retry-After to what waits longer than SECM_SERVE_QUEUE_SECONDS (default 2).
    SIGTERM or Ctrl-C stops taking connections and finishes the requests in flight.
    """
    from api.database import migrate
    from api.server import listening_sockets, when_ready
    from api.server import serve as serve_api
    from secm.settings import get_settings

    processes = workers or os.cpu_count() or 1
    with _clean_errors():
        settings = get_settings()
        # Migrate once here, so that the processes do not race to create the schema.
        migrate(settings.effective_database_url)
        sockets = listening_sockets(host, port, processes)
    console.print(f"Starting {processes} process{'es' if processes > 1 else ''} on http://{host}:{port}…")

    def ready(answering: bool) -> None:
        if answering:
            console.print(f"Serving on http://{host}:{port} (API documentation at http://{host}:{port}/docs).")
        else:
            console.print(f"[yellow]Not every process answers on http://{host}:{port} yet; see the log above.[/]")

    when_ready(host, port, processes, ready)
    serve_api(sockets, log_level="warning", timeout_graceful_shutdown=30)


@app.command()
def report(
    year: Annotated[int, typer.Option(min=1990, max=2100, help="The year to report on.")],
    format: Annotated[str, typer.Option(help="json, csv, xlsx or html.")] = "json",
    out: Annotated[Path | None, typer.Option(help="Output file (default: annual_report_<year>.<format>).")] = None,
    basis: Annotated[
        str, typer.Option(help="service (year of service) or detection (year first detected).")
    ] = "service",
    suppression: Annotated[
        bool, typer.Option(help="Suppress small cells (--no-suppression: internal use only, audited).")
    ] = True,
    lang: Annotated[str, typer.Option(help="fr, nl or en: the language of titles and headings.")] = "en",
) -> None:
    """Export the SCA's annual figures from the published runs and the cases."""
    import getpass

    from api.auth import Caller, audit
    from api.database import migrate
    from api.report import annual_report
    from api.report_export import FORMATS, export
    from api.targets import load_targets
    from secm.settings import get_settings

    with _clean_errors():
        if format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
        _check_language(lang)
        if basis not in ("service", "detection"):
            raise ValueError(f"--basis must be service or detection, not {basis!r}")
        target = out or Path(f"annual_report_{year}.{format}")
        settings = get_settings()
        with migrate(settings.effective_database_url).begin() as connection:
            if not suppression:
                caller = Caller(getpass.getuser(), "command_line")
                audit(connection, caller, "read_report_unsuppressed", detail={"year": year, "basis": basis})
            minimum = settings.report_min_cell if suppression else 0
            targets = load_targets(settings.targets_file, year)
            figures = annual_report(connection, year, basis, minimum, lang, targets)  # type: ignore[arg-type]
        export(figures, format, target)
    totals = figures["totals"]
    console.print(
        f"{year}: {totals['lines_flagged']:,} lines flagged, {totals['providers']:,} providers, "
        f"{totals['amount_at_stake_eur']:,.2f} EUR at stake. Written to {target}."
    )


@app.command()
def profile(
    nihdi: Annotated[str, typer.Option(help="The provider's 11-digit NIHDI number.")],
    lang: Annotated[str | None, typer.Option(help="fr, nl or en (default: from the provider's region).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output HTML file (default: profile_<nihdi>_<period>.html).")] = None,
    period: Annotated[str | None, typer.Option(help="A year or quarter (default: the provider's latest).")] = None,
    run_id: Annotated[str | None, typer.Option(help="A published run (default: the newest).")] = None,
) -> None:
    """Write a provider's feedback profile: their billing against comparable providers, for them."""
    from api.database import migrate
    from api.documents import language_of
    from api.feedback import feedback_profile, render
    from secm.settings import get_settings

    with _clean_errors():
        _check_language(lang)
        with migrate(get_settings().effective_database_url).connect() as connection:
            document = feedback_profile(connection, nihdi, run_id, period)
        chosen = lang or language_of(document["region"])
        target = out or Path(f"profile_{nihdi}_{document['period']}.html")
        target.write_text(render(document, chosen), encoding="utf-8")  # type: ignore[arg-type]
    console.print(f"Feedback profile of {nihdi} for {document['period']} ({chosen}) written to {target}.")


campaign_app = typer.Typer(
    help="Sensitisation campaigns: letters to selected providers, and their effect.", no_args_is_help=True
)
app.add_typer(campaign_app, name="campaign")


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Option(help="A unique name (letters, digits, '.', '_', '-').")],
    rule: Annotated[str, typer.Option(help="The rule whose share of flagged lines selects providers.")],
    profession: Annotated[str | None, typer.Option(help="Only providers of this profession.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only lines of this billing channel (e.g. efact).")] = None,
    min_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Smallest share of lines flagged.")] = 0.1,
    min_lines: Annotated[int, typer.Option(min=1, help="Fewest lines (in the channel) in the period.")] = 20,
    period: Annotated[str | None, typer.Option(help="The period measured (default: the run's latest).")] = None,
    run_id: Annotated[str | None, typer.Option(help="A published run (default: the newest).")] = None,
    letters: Annotated[
        Path | None, typer.Option(help="Folder for the letters (default: SECM_HOME/campaigns/NAME).")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who creates it (default: the system user).")] = None,
) -> None:
    """Select providers by a rule's share of flagged lines, keep a matched half for comparison,
    and write one letter per contacted provider in their language."""
    import getpass

    from api.campaigns import create_campaign, write_letters
    from api.database import migrate
    from secm.settings import get_settings

    with _clean_errors():
        settings = get_settings()
        engine = migrate(settings.effective_database_url)
        with engine.begin() as connection:
            created = create_campaign(
                connection,
                name=name,
                rule_id=rule,
                created_by=by or getpass.getuser(),
                profession=profession,
                channel=channel,
                min_share=min_share,
                min_lines=min_lines,
                period=period,
                run_id=run_id,
            )
            folder = letters or settings.resolved_home / "campaigns" / name
            written = write_letters(connection, name, folder)
    console.print(
        f"Campaign {name}: {created['contacted']} providers contacted, {created['comparison']} kept for comparison "
        f"(period {created['period']}, run {created['run_id']}); {len(written)} letters in {folder}."
    )


@campaign_app.command("impact")
def campaign_impact(
    name: Annotated[str, typer.Option(help="The campaign.")],
    run_id: Annotated[str | None, typer.Option(help="A later published run (default: the newest).")] = None,
) -> None:
    """The campaign's effect: change of the targeted share, contacted against comparison."""
    from api.campaigns import CampaignError, campaign, impact
    from api.database import migrate
    from secm.settings import get_settings

    with _clean_errors(), migrate(get_settings().effective_database_url).connect() as connection:
        measured = impact(connection, campaign(connection, name), run_id)
        if measured["status"] != "measured":
            raise CampaignError(measured["message"])
    table = Table(title=f"Campaign {name}: change of the share flagged after {', '.join(measured['after_periods'])}")
    for column in (
        "profession",
        "contacted",
        "before",
        "after",
        "comparison",
        "before",
        "after",
        "effect",
        "95% interval",
    ):
        table.add_column(column)
    for g in measured["groups"]:
        interval = "" if g["ci_low"] is None else f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]"
        effect = "" if g["effect"] is None else f"{g['effect']:+.3f}"
        table.add_row(
            g["profession"],
            str(g["contacted"]),
            _share_text(g["contacted_before"]),
            _share_text(g["contacted_after"]),
            str(g["comparison"]),
            _share_text(g["comparison_before"]),
            _share_text(g["comparison_after"]),
            effect,
            interval,
        )
    Console().print(table)


def _share_text(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@app.command("rules")
def list_rules(
    legislation: Legislation = "current",
    catalog: Annotated[Path | None, typer.Option(help="Rule catalog YAML.")] = None,
) -> None:
    """List the rule catalog with legal basis and parameters."""
    with _clean_errors():
        cat = load_catalog(catalog)
        cat.check_legislation(legislation)
    table = Table(title=f"Rule catalog ({legislation})")
    for column in ("rule", "title", "legal basis", "parameters"):
        table.add_column(column)
    for rule in cat:
        params = ", ".join(f"{k}={v}" for k, v in rule.parameters_for(legislation).items())
        table.add_row(rule.id, rule.titles.en, rule.legal_basis, params)
    Console().print(table)


def _check_language(lang: str | None) -> None:
    from api.formats import LANGUAGES

    if lang is not None and lang not in LANGUAGES:
        raise ValueError(f"--lang must be one of {', '.join(LANGUAGES)}, not {lang!r}")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _print_tables(tables: dict[str, dict[str, float]]) -> None:
    table = Table(title="Tables")
    for column in ("table", "read", "valid", "quarantined", "seconds"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, s in tables.items():
        table.add_row(
            name, f"{s['rows_read']:,}", f"{s['rows_valid']:,}", f"{s['rows_quarantined']:,}", f"{s['seconds']:.2f}"
        )
    console.print(table)


def _print_rules(rules: dict[str, dict[str, float]], legislation: str) -> None:
    table = Table(title=f"Flags ({legislation})")
    for column in ("rule", "lines", "providers", "amount at stake (EUR)"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for rule_id, s in rules.items():
        table.add_row(rule_id, f"{s['lines_flagged']:,}", f"{s['providers']:,}", f"{s['amount_at_stake_eur']:,.2f}")
    console.print(table)


if __name__ == "__main__":
    app()

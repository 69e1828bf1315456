"""Publishing a run's results into the application database, atomically.

Everything a run wrote (flags, provider scores and profiles, quarantine counts) and the
dataset's reference tables go in one transaction; the run row is marked ``complete`` in the
same transaction, so readers never see a half-loaded run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import sqlalchemy as sa

from api import tables as t
from api.database import in_background, migrate

CHUNK = 20_000
# The tables the rules read besides the lines: published with each run for real-time checks.
REFERENCE_TABLES = (
    "providers",
    "third_party_registry",
    "tp_suspensions",
    "provider_debts",
    "provider_status",
    "nomenclature",
)


def _csv(column: str) -> pl.Expr:
    """A comma-wrapped, sorted list of the distinct values: ``,A,B,``."""
    return pl.format(",{},", pl.col(column).cast(pl.String).drop_nulls().unique().sort().str.join(","))


def provider_summary(flags: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """One row per scored or flagged provider: totals of its flags, its highest score, and its
    persistence (the top-decile streak of its latest period)."""
    flagged = (
        flags.group_by("provider_nihdi").agg(
            pl.col("profession").drop_nulls().first(),
            pl.col("region").drop_nulls().first(),
            pl.len().cast(pl.Int64).alias("lines_flagged"),
            pl.col("amount_at_stake_eur").sum().round(2),
            _csv("rule_id").alias("rules"),
            _csv("insurer_code").alias("insurers"),
            _csv("_year").alias("years"),
        )
        if flags.height
        else None
    )
    best = scores.group_by("provider_nihdi").agg(
        pl.col("peer_group").first().str.split("|").list.first().alias("_profession"),
        pl.col("score").max(),
        pl.col("rank").min(),
        pl.col("top_decile_streak").sort_by("period").last().cast(pl.Int64).alias("persistence"),
    )
    if flagged is None:
        merged = best.with_columns(
            pl.col("_profession").alias("profession"),
            pl.lit(None, pl.String).alias("region"),
            pl.lit(0, pl.Int64).alias("lines_flagged"),
            pl.lit(0.0).alias("amount_at_stake_eur"),
            *(pl.lit(",").alias(c) for c in ("rules", "insurers", "years")),
        )
    else:
        merged = flagged.join(best, on="provider_nihdi", how="full", coalesce=True).with_columns(
            pl.coalesce("profession", "_profession").alias("profession"),
            pl.col("lines_flagged").fill_null(0),
            pl.col("amount_at_stake_eur").fill_null(0.0),
            pl.col("persistence").fill_null(0),
            *(pl.col(c).fill_null(",") for c in ("rules", "insurers", "years")),
        )
    return merged.drop("_profession")


def _index_order(table: sa.Table) -> list[str]:
    """The columns after ``run_id`` of the table's primary key or, where that is a serial id,
    of its index. Rows inserted in their order fill the B-tree's pages one after the other,
    not a random page each: a million flags went to PostgreSQL in 4.8-5.4 s in that order
    against 5.0-6.3 s in the order a run writes them (by rule and claim)."""
    key = [c.name for c in table.primary_key.columns]
    if key == ["id"]:
        key = [c.name for c in min(table.indexes, key=lambda index: str(index.name)).columns] if table.indexes else []
    return [c for c in key if c != "run_id"]


def _insert(connection: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    """Insert ``frame``'s rows into ``table`` in bulk, within the connection's transaction.

    SQLAlchemy's own insert builds and processes a dict per row, which made a million flags a
    half-minute publish on SQLite and a minute on PostgreSQL, a core taken from the service all
    that time. PostgreSQL gets the rows as CSV through ``COPY``; SQLite gets tuples of plain
    values through the driver's ``executemany``, dates as the ISO text SQLAlchemy's ``Date``
    reads back. The rows go in the order of the table's index (:func:`_index_order`).
    """
    order = _index_order(table)
    if order:
        frame = frame.sort(order, maintain_order=True)
    quote = connection.dialect.identifier_preparer.quote
    target = f"{quote(table.name)} ({', '.join(quote(c) for c in frame.columns)})"
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {target} FROM STDIN (FORMAT csv)") as copy:
            for chunk in frame.iter_slices(CHUNK):
                copy.write(chunk.write_csv(include_header=False))
        return
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    statement = f"INSERT INTO {target} VALUES ({', '.join([marker] * frame.width)})"
    if connection.dialect.name == "sqlite":
        frame = frame.with_columns(pl.col(pl.Date).dt.to_string("%Y-%m-%d"))
    for chunk in frame.iter_slices(CHUNK):
        connection.exec_driver_sql(statement, chunk.rows())


RUN_IDENTITY = ("run_id", "created_at", "dataset", "legislation")  # what a run knows of itself from its start


@dataclass(frozen=True)
class Scored:
    """What a run knows once it is scored: its ``info`` (as in ``run.json``), its providers'
    scores and profiles."""

    info: Mapping[str, Any]
    scores: pl.DataFrame
    profiles: pl.DataFrame


def publish(
    url: str,
    info: Mapping[str, Any],
    *,
    flags: pl.DataFrame,
    scores: pl.DataFrame,
    profiles: pl.DataFrame,
    quarantine: pl.DataFrame,
    references: Mapping[str, pl.DataFrame],
) -> str:
    """Load one run into the database at ``url``; its ``run_id``."""
    scored = Scored(info, scores, profiles)
    return publish_scored_later(
        url, info, flags=flags, quarantine=quarantine, references=references, scored=lambda: scored
    )


def publish_scored_later(
    url: str,
    run: Mapping[str, Any],
    *,
    flags: pl.DataFrame,
    quarantine: pl.DataFrame,
    references: Mapping[str, pl.DataFrame],
    scored: Callable[[], Scored],
) -> str:
    """Load one run into the database at ``url`` in one transaction: first what it knows before
    scoring (``run``, its :data:`RUN_IDENTITY`; its flags, quarantine and reference tables),
    then what ``scored()`` gives once it returns. The run's ``run_id``.

    :class:`Publication` calls this in a thread while the run scores: the flags, most of the
    rows, are loaded meanwhile. When ``scored()`` raises, nothing is published.
    """
    run_id = str(run["run_id"])
    flag_rows = flags.select(
        pl.lit(run_id).alias("run_id"), *(c.name for c in t.flags.columns if c.name not in ("id", "run_id"))
    )
    quarantined = (
        quarantine.explode("reasons")
        .group_by("table", "reasons")
        .len()
        .select(
            pl.lit(run_id).alias("run_id"),
            pl.col("table").alias("table_name"),
            pl.col("reasons").alias("reason"),
            pl.col("len").alias("rows"),
        )
    )
    reference = pl.concat(
        [
            frame.select(pl.lit(name).alias("table_name"), pl.struct(pl.all()).struct.json_encode().alias("row"))
            for name, frame in references.items()
            if name in REFERENCE_TABLES
        ]
        or [pl.DataFrame(schema={"table_name": pl.String, "row": pl.String})]
    ).with_columns(pl.lit(run_id).alias("run_id"))
    engine = migrate(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                t.runs.insert().values(
                    run_id=run_id,
                    created_at=datetime.fromisoformat(str(run["created_at"])),
                    published_at=datetime.now(UTC),
                    dataset=str(run.get("dataset", "")),
                    legislation=str(run["legislation"]),
                    status="loading",
                    info={key: run[key] for key in RUN_IDENTITY if key in run},
                )
            )
            _insert(connection, t.flags, flag_rows)
            _insert(connection, t.provider_rules, flag_rows.select("run_id", "rule_id", "provider_nihdi").unique())
            _insert(connection, t.quarantine_counts, quarantined)
            _insert(connection, t.reference_rows, reference)
            result = scored()
            _insert(connection, t.provider_scores, _score_rows(run_id, result.scores, result.profiles))
            summary = provider_summary(
                flags.with_columns(pl.col("service_date").dt.year().alias("_year")), result.scores
            )
            _insert(connection, t.flagged_providers, summary.with_columns(pl.lit(run_id).alias("run_id")))
            connection.execute(
                t.runs.update()
                .where(t.runs.c.run_id == run_id)
                .values(
                    status="complete",
                    published_at=datetime.now(UTC),
                    info=json.loads(json.dumps(result.info, default=str)),
                )
            )
    finally:
        engine.dispose()  # its connection closed now, not whenever the engine is collected
    return run_id


def _score_rows(run_id: str, scores: pl.DataFrame, profiles: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``provider_scores``: each score with its profile as JSON."""
    features = [c for c in profiles.columns if c not in ("provider_nihdi", "period")]
    profile_json = profiles.select(
        "provider_nihdi", "period", pl.struct(features).struct.json_encode().alias("profile")
    )
    return scores.join(profile_json, on=["provider_nihdi", "period"], how="left").select(
        pl.lit(run_id).alias("run_id"),
        "provider_nihdi",
        "period",
        "peer_group",
        "peer_group_size",
        "score",
        "rank",
        pl.col("explanation").fill_null(""),
        pl.col("contributions").fill_null("[]"),
        pl.col("profile").fill_null("{}"),
        "top_decile_streak",
    )


class Publication:
    """A run's publication begun before the run is scored (:func:`publish_scored_later` in a
    thread of its own): the flags are loaded while the run scores, on the core that scoring
    leaves free. The run then calls :meth:`complete`; a run that leaves the ``with`` block of
    its publication without, by an error or not, publishes nothing."""

    def __init__(
        self,
        url: str,
        run: Mapping[str, Any],
        *,
        flags: pl.DataFrame,
        quarantine: pl.DataFrame,
        references: Mapping[str, pl.DataFrame],
    ) -> None:
        self._scored: Future[Scored] = Future()
        self._published = in_background(
            "secm-publish",
            publish_scored_later,
            url,
            run,
            flags=flags,
            quarantine=quarantine,
            references=references,
            scored=self._scored.result,
        )

    def complete(self, info: Mapping[str, Any], scores: pl.DataFrame, profiles: pl.DataFrame) -> str:
        """Publish the rest and commit, once the rows loaded meanwhile are in; the ``run_id``."""
        self._scored.set_result(Scored(info, scores, profiles))
        return self._published.result()

    def __enter__(self) -> Publication:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        """Without :meth:`complete`, what was loaded is rolled back before the block is left."""
        if self._scored.done():
            return
        self._scored.set_exception(error or RuntimeError("the run ended before its publication was complete"))
        wait([self._published])  # rolled back once the thread is done; the run's own error is the one raised

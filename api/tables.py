"""The application database: published runs, their results, cases, tokens and the audit log.

The schema is created and changed only by the Alembic migrations in ``api/migrations``; these
table objects are what the code queries with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()
BASELINE = "0001"


def since(revision: str) -> dict[str, str]:
    """``info`` for a column or index added after the baseline, by the revision that adds it."""
    return {"since": revision}


def _revision(item: sa.Column[Any] | sa.Index | sa.Table) -> str:
    return str(item.info.get("since", BASELINE))


def as_of(revision: str) -> sa.MetaData:
    """The schema as a migration ``revision`` left it: the columns and indexes not added later.

    The baseline migration creates this for itself, so that a column added by a later
    revision exists once, whether the database was created before or after it.
    """
    frozen = sa.MetaData()
    for table in metadata.sorted_tables:
        if _revision(table) > revision:
            continue
        columns = [c._copy() for c in table.columns if _revision(c) <= revision]
        for column in columns:
            column.index = None  # the table's own Index objects below include these
        copy = sa.Table(table.name, frozen, *columns, **table.dialect_kwargs)
        for index in table.indexes:
            if _revision(index) <= revision:
                sa.Index(index.name, *(copy.c[c.name] for c in index.columns), unique=index.unique)
    return frozen


def added_in(revision: str) -> list[tuple[sa.Table, list[sa.Column[Any]], list[sa.Index]]]:
    """Per existing table, the columns and indexes ``revision`` adds."""
    changes = []
    for table in metadata.sorted_tables:
        if _revision(table) == revision:
            continue
        columns = [c for c in table.columns if _revision(c) == revision]
        indexes = [i for i in table.indexes if _revision(i) == revision]
        if columns or indexes:
            changes.append((table, columns, indexes))
    return changes


def additive(revision: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """``upgrade`` and ``downgrade`` of a revision that only adds the tables, columns and
    indexes tagged ``since(revision)``."""
    from alembic import op  # only migrations call this

    tables = [table.name for table in metadata.sorted_tables if _revision(table) == revision]

    def upgrade() -> None:
        schema = as_of(revision)
        schema.create_all(op.get_bind(), tables=[schema.tables[name] for name in tables])
        for table, columns, indexes in added_in(revision):
            with op.batch_alter_table(table.name) as batch:
                for column in columns:
                    batch.add_column(column._copy())
            for index in indexes:
                op.create_index(index.name, table.name, [c.name for c in index.columns], unique=index.unique)

    def downgrade() -> None:
        for table, columns, indexes in added_in(revision):
            for index in indexes:
                op.drop_index(index.name, table_name=table.name)
            with op.batch_alter_table(table.name) as batch:
                for column in columns:
                    batch.drop_column(column.name)
        schema = as_of(revision)
        schema.drop_all(op.get_bind(), tables=[schema.tables[name] for name in tables])

    return upgrade, downgrade


def _serial_id() -> sa.Column[int]:
    """A row's number, given by the database: a BIGINT, except on SQLite, where only an
    INTEGER primary key is the row id itself."""
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)


def _run_id(*, primary_key: bool = False) -> sa.Column[str]:
    """The published run a row belongs to; its rows go when the run is deleted."""
    foreign_key = sa.ForeignKey("runs.run_id", ondelete="CASCADE")
    return sa.Column("run_id", sa.String(32), foreign_key, primary_key=primary_key, nullable=False)


runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("legislation", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # loading, complete
    sa.Column("info", sa.JSON, nullable=False),
)

flags = sa.Table(
    "flags",
    metadata,
    _serial_id(),
    _run_id(),
    sa.Column("claim_id", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("provider_nihdi", sa.String(11), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("amount_at_stake_eur", sa.Float, nullable=False),
    sa.Column("service_date", sa.Date, nullable=False),
    sa.Column("insurer_code", sa.String(8)),
    sa.Column("channel", sa.String(32)),
    sa.Column("nomenclature_code", sa.String(16)),
    sa.Column("profession", sa.String(32)),
    sa.Column("region", sa.String(8)),
    sa.Column("severity", sa.String(16)),
    sa.Column("legal_basis", sa.Text),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Index("ix_flags_run_provider", "run_id", "provider_nihdi", "rule_id"),
)

flagged_providers = sa.Table(
    "flagged_providers",
    metadata,
    _run_id(primary_key=True),
    sa.Column("provider_nihdi", sa.String(11), primary_key=True),
    sa.Column("profession", sa.String(32)),
    sa.Column("region", sa.String(8)),
    sa.Column("lines_flagged", sa.Integer, nullable=False),
    sa.Column("amount_at_stake_eur", sa.Float, nullable=False),
    # Comma-wrapped lists (",A,B,"): filters on insurer and year are a LIKE over one run;
    # the rule filter, the most used, goes through provider_rules.
    sa.Column("rules", sa.Text, nullable=False),
    sa.Column("insurers", sa.Text, nullable=False),
    sa.Column("years", sa.Text, nullable=False),
    sa.Column("score", sa.Float),
    sa.Column("rank", sa.Integer),
    # Consecutive periods, up to the provider's latest, in the top decile of scores.
    sa.Column("persistence", sa.Integer, nullable=False, server_default="0", info=since("0002")),
    sa.Index("ix_flagged_run_amount", "run_id", "amount_at_stake_eur"),
    sa.Index("ix_flagged_run_score", "run_id", "score"),
    sa.Index("ix_flagged_run_lines", "run_id", "lines_flagged"),
    sa.Index("ix_flagged_run_persistence", "run_id", "persistence", info=since("0002")),
)

provider_rules = sa.Table(
    "provider_rules",
    metadata,
    _run_id(primary_key=True),
    sa.Column("rule_id", sa.String(64), primary_key=True),
    sa.Column("provider_nihdi", sa.String(11), primary_key=True),
)

provider_scores = sa.Table(
    "provider_scores",
    metadata,
    _run_id(primary_key=True),
    sa.Column("provider_nihdi", sa.String(11), primary_key=True),
    sa.Column("period", sa.String(8), primary_key=True),
    sa.Column("peer_group", sa.String(64), nullable=False),
    sa.Column("peer_group_size", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.Column("contributions", sa.Text, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),  # the profile's features, JSON
    sa.Column("top_decile_streak", sa.Integer, nullable=False, server_default="0", info=since("0002")),
)

quarantine_counts = sa.Table(
    "quarantine_counts",
    metadata,
    _run_id(primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("reason", sa.String(64), primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
)

reference_rows = sa.Table(
    "reference_rows",
    metadata,
    _serial_id(),
    _run_id(),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("row", sa.Text, nullable=False),  # JSON
    sa.Index("ix_reference_run_table", "run_id", "table_name"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("expires_at", sa.DateTime(timezone=True), info=since("0003")),
    sa.Column("last_used_at", sa.DateTime(timezone=True), info=since("0003")),
)

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider_nihdi", sa.String(11), nullable=False, index=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16)),
    sa.Column("amount_to_recover_eur", sa.Float),
    sa.Column("notes", sa.Text, nullable=False, default=""),
    sa.Column("opened_by", sa.String(128), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    # What prompted the case, frozen when it was opened (``api.queries.decision_record``).
    sa.Column("decision_record", sa.JSON, info=since("0007")),
)

case_events = sa.Table(
    "case_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("change", sa.JSON, nullable=False),
)

# The graduated response, in the order a case climbs it (the 2024 note's ladder).
LADDER = ("sensitisation", "warning", "official_report", "sanction")

case_actions = sa.Table(
    "case_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    # A rung of ``LADDER``.
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("taken_on", sa.Date, nullable=False),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("amount_eur", sa.Float),  # a sanction's amount
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    info=since("0006"),
)

# Money actually recovered on a confirmed case, as it comes in (possibly in instalments).
case_recoveries = sa.Table(
    "case_recoveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("amount_eur", sa.Float, nullable=False),
    sa.Column("received_on", sa.Date, nullable=False),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    info=since("0008"),
)

# The real-time history (``api.history``): lines and invoices posted to ``POST /claims/check``,
# shared by every process of the service. A line's ``id`` numbers it among all stored lines,
# never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so that a process reads
# only the lines stored since it last read.
realtime_lines = sa.Table(
    "realtime_lines",
    metadata,
    _serial_id(),
    _run_id(),
    sa.Column("provider_nihdi", sa.String(11), nullable=False),
    sa.Column("claim_id", sa.String, nullable=False),
    sa.Column("posted_at", sa.Float, nullable=False, index=True),  # seconds since the epoch
    sa.Column("line", sa.Text, nullable=False),  # the validated line as JSON
    sa.Index("realtime_lines_claim", "run_id", "provider_nihdi", "claim_id", unique=True),
    sa.Index("realtime_lines_since", "run_id", "provider_nihdi", "id"),
    info=since("0009"),
    sqlite_autoincrement=True,
)

realtime_invoices = sa.Table(
    "realtime_invoices",
    metadata,
    _run_id(primary_key=True),
    sa.Column("caller", sa.String(128), primary_key=True),
    sa.Column("invoice_id", sa.String, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("posted_at", sa.Float, nullable=False, index=True),
    sa.Column("invoice", sa.Text, nullable=False),
    info=since("0009"),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("period", sa.String(8), nullable=False),  # the period the selection measured
    sa.Column("criteria", sa.JSON, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    info=since("0005"),
)

campaign_providers = sa.Table(
    "campaign_providers",
    metadata,
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), primary_key=True),
    sa.Column("provider_nihdi", sa.String(11), primary_key=True),
    sa.Column("arm", sa.String(16), nullable=False),  # contacted, comparison
    sa.Column("pair", sa.Integer, nullable=False),
    sa.Column("profession", sa.String(32)),
    sa.Column("region", sa.String(8)),
    sa.Column("language", sa.String(2), nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("flagged", sa.Integer, nullable=False),
    info=since("0005"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    _serial_id(),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("provider_nihdi", sa.String(11)),
    sa.Column("case_id", sa.Integer),
    sa.Column("detail", sa.JSON, nullable=False),
)


def records(result: sa.Result[Any]) -> list[dict[str, Any]]:
    """A result's rows as dicts keyed by plain ``str``.

    SQLAlchemy keys rows by ``quoted_name``, a ``str`` subclass that JSON serialisers cannot
    take on their fast path: a page of 50 rows serialised sixty times slower with it.
    """
    keys = list(map(str, result.keys()))
    return [dict(zip(keys, row, strict=True)) for row in result]


def first_record(result: sa.Result[Any]) -> dict[str, Any] | None:
    """The first row of ``result`` as ``records`` gives it, or None."""
    keys = list(map(str, result.keys()))
    row = result.first()
    return None if row is None else dict(zip(keys, row, strict=True))

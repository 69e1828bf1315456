"""Connecting to the application database and bringing its schema up to date."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry as PoolRecord

MIGRATIONS = Path(__file__).parent / "migrations"
# The latest migration's revision (a test checks it is Alembic's head). A database already at it
# is not handed to Alembic: importing Alembic took 0.12 s, most of what a command that only
# opens the database spends before its work (a run's publish, a token created).
HEAD_REVISION = "0009"
# Errors that mean "the database cannot answer now" rather than "this request is wrong":
# the server is down or restarting, a connection broke, the pool has nothing free, or
# SQLite stayed locked past its busy timeout. The service answers them with 503.
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
SQLITE_BUSY_SECONDS = 30  # how long a SQLite writer waits for another's write lock
IDLE_PING_SECONDS = 1.0  # a pooled connection unused this long is checked before use
Args = ParamSpec("Args")
Result = TypeVar("Result")


@cache
def engine_for(url: str, pool_size: int = 5, pool_timeout: float = 30.0) -> sa.Engine:
    """One engine per database URL and pool shape.

    SQLite gets foreign keys, WAL (readers never wait for a publishing writer) and a busy
    timeout; PostgreSQL gets a liveness check of pooled connections that sat idle (see
    ``_ping_when_idle``), so that the service recovers by itself after the server restarts.
    ``pool_size`` connections at most: no overflow, so that a service sized for N concurrent
    requests never opens more.
    """
    pool = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS}, **pool)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection, _):  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql+psycopg") else {}
    engine = sa.create_engine(url, connect_args=connect_args, **pool)
    _ping_when_idle(engine)
    return engine


@cache
def reading(engine: sa.Engine) -> sa.Engine:
    """``engine`` in autocommit: for requests that only read (sharing its pool)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _ping_when_idle(engine: sa.Engine) -> None:
    """Check a pooled connection before use only if it sat idle for ``IDLE_PING_SECONDS``.

    SQLAlchemy's ``pool_pre_ping`` checks every checkout: a round trip to the server on every
    request. A connection in steady use needs none: if the server went away meanwhile, the
    request fails with a disconnect (a 503), which discards the whole pool, and the next
    request connects afresh.
    """

    @sa.event.listens_for(engine, "checkin")
    def _returned(_: object, record: PoolRecord) -> None:
        record.info["returned_at"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _taken(dbapi_connection: DBAPIConnection, record: PoolRecord, _: object) -> None:
        if time.monotonic() - record.info.get("returned_at", 0.0) > IDLE_PING_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except engine.dialect.loaded_dbapi.Error as exc:
                raise sa.exc.DisconnectionError(str(exc)) from exc


def _revision(engine: sa.Engine) -> str | None:
    """The database's Alembic revision; None before its first migration."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def migrate(url: str, pool_size: int = 5, pool_timeout: float = 30.0) -> sa.Engine:
    """Apply every Alembic migration not yet applied; the engine, ready to use."""
    engine = engine_for(url, pool_size, pool_timeout)
    if _revision(engine) == HEAD_REVISION:
        return engine
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return engine


def in_background(name: str, task: Callable[Args, Result], *args: Args.args, **kwargs: Args.kwargs) -> Future[Result]:
    """``task`` called in a thread of its own (named ``name``), its result or its error in the
    future returned: a run opens, or fills, the database while its own work goes on."""
    thread = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return thread.submit(task, *args, **kwargs)
    finally:
        thread.shutdown(wait=False)

"""Engines for the state database: SQLite files (shared by several processes) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
DEFAULT_BUSY_TIMEOUT_MS = 30_000
# Execution option a write transaction carries: on SQLite it begins with BEGIN IMMEDIATE.
WRITE_OPTION = "layerfill_write"


class StateURLError(ValueError):
    """A database URL the state store cannot use."""


def parse_url(url: str | URL, field: str = "database_url") -> URL:
    """Check and normalise a state database URL.

    `postgresql://` gets the psycopg (3) driver: SQLAlchemy would otherwise pick psycopg2, which is not installed.
    """
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise StateURLError(f"invalid {field}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_DIALECTS:
        raise StateURLError(
            f"invalid {field} {parsed.render_as_string(hide_password=True)!r}: "
            f"dialect {backend!r} is not supported (use sqlite or postgresql)"
        )
    if backend == "postgresql" and "+" not in parsed.drivername:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StateURLError(
            f"invalid {field} {str(parsed)!r}: an in-memory SQLite database is private to one connection; use a file"
        )
    return parsed


def redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def create_state_engine(
    url: str | URL, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, pool_size: int = 10, echo: bool = False
) -> Engine:
    """An engine ready for concurrent use by several threads (and, for SQLite, several processes)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # No pool_pre_ping: it would double the fetcher's one-lookup fast path. A connection dropped by a
    # database restart fails one call, and SQLAlchemy then replaces the whole pool.
    engine = sa.create_engine(parsed, echo=echo, pool_size=pool_size, pool_recycle=1800)
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine, busy_timeout_ms)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The sqlite3 module would open transactions lazily and only before DML, which lets two writers
        # both read first and then deadlock on the upgrade to a write lock; we issue BEGIN ourselves.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # WAL lets the status CLI read while the bridge and fetcher write, across processes.
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout); reads stay lock-free.
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

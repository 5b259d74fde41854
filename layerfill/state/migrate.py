"""Alembic driven from code: no alembic.ini at run time, so it works the same from an installed wheel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

from .engine import WRITE_OPTION, create_state_engine
from .models import Base

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
# Alembic's `context` and `op` are process-wide proxies: two threads must not run commands at once.
_ALEMBIC_LOCK = threading.Lock()
# PostgreSQL advisory lock key of layerfill's migrations (any constant; "layerfil" in ASCII).
_MIGRATION_LOCK_ID = 0x6C61796572666C


class SchemaVersionError(RuntimeError):
    """The database's schema revision is not the one this code expects."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # only if versions/ were missing from the installed package
        raise SchemaVersionError(f"no migrations found under {MIGRATIONS_DIR}")
    return head


@contextmanager
def _engine(target: str | URL | Engine) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = create_state_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def _run(target: str | URL | Engine, action: str, revision: str) -> None:
    config = alembic_config()
    with (
        _ALEMBIC_LOCK,
        _engine(target) as engine,
        engine.execution_options(**{WRITE_OPTION: True}).begin() as conn,
    ):
        if conn.dialect.name == "postgresql":
            # Processes started together (fetcher and scanner on a fresh database) migrate one after the other;
            # the second then finds the schema at head. Released at commit.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
        # env.py runs on this connection, inside this transaction: one commit for the whole step.
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Bring the database at `target` (a URL or an engine) up to `revision`; safe to call on every start."""
    _run(target, "upgrade", revision)


def downgrade(target: str | URL | Engine, revision: str) -> None:
    """Step the schema back to `revision` (`base` drops every table)."""
    _run(target, "downgrade", revision)


def current_revision(target: str | URL | Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with _engine(target) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_head(target: str | URL | Engine) -> None:
    """Raise SchemaVersionError unless the database is at the newest revision."""
    current, head = current_revision(target), head_revision()
    if current != head:
        raise SchemaVersionError(
            f"state database is at schema revision {current!r}, this layerfill needs {head!r}: "
            "open it with migrations enabled (the default) to upgrade it"
        )


def schema_diff(target: str | URL | Engine) -> list[Any]:
    """Differences between the models and the database (empty when the migrations match the models),
    in Alembic's autogenerate diff format; the programmatic `alembic check`."""
    with _engine(target) as engine, engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, Base.metadata))

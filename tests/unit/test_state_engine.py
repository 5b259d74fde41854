from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from layerfill.state import StateURLError, create_state_engine, parse_url
from layerfill.state.engine import WRITE_OPTION

pytestmark = pytest.mark.unit


def test_postgresql_urls_get_the_psycopg3_driver() -> None:
    assert parse_url("postgresql://u@db:5432/lf").drivername == "postgresql+psycopg"
    assert parse_url("postgresql+psycopg://u@db/lf").drivername == "postgresql+psycopg"
    assert parse_url("sqlite:////var/lib/layerfill/state.db").drivername == "sqlite"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://u:secret@db/lf", "dialect 'mysql' is not supported"),
        ("not a url", "invalid database_url"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
    ],
)
def test_unusable_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(StateURLError, match=match) as info:
        parse_url(url)
    assert "secret" not in str(info.value)


def test_sqlite_connections_are_set_up_for_sharing(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    engine = create_state_engine(f"sqlite:///{path}", busy_timeout_ms=1234)
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
        assert pragma == {"journal_mode": "wal", "busy_timeout": 1234, "foreign_keys": 1, "synchronous": 1}
        assert path.exists()
    finally:
        engine.dispose()


def test_sqlite_writers_lock_at_begin_while_readers_go_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    holder, other = create_state_engine(url), create_state_engine(url, busy_timeout_ms=50)
    try:
        with holder.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with holder.execution_options(**{WRITE_OPTION: True}).begin():
            # BEGIN IMMEDIATE alone, no statement yet: the write lock is already held...
            with (
                pytest.raises(OperationalError, match="database is locked"),
                other.execution_options(**{WRITE_OPTION: True}).begin(),
            ):
                pass
            # ...and WAL still lets a reader in.
            with other.connect() as reader:
                assert reader.execute(sa.text("SELECT x FROM t")).scalar() == 1
    finally:
        holder.dispose()
        other.dispose()

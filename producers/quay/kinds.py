"""Quay's log kind ids -> names: a configured map, else Quay's `logentrykind` table (read once at start)."""

from __future__ import annotations

from layerfill.config.settings import QuayLogsSettings


class KindsUnavailable(RuntimeError):
    pass


def load_kinds(cfg: QuayLogsSettings) -> dict[int, str]:
    if cfg.kinds:
        return dict(cfg.kinds)
    if cfg.kinds_database_url is None:
        raise KindsUnavailable(
            "quay_logs.kinds (a kind_id -> name map) or quay_logs.kinds_database_url (Quay's DB_URI) must be set"
        )
    return read_kinds(cfg.kinds_database_url.get_secret_value())


def read_kinds(database_url: str) -> dict[int, str]:
    import psycopg

    # Quay's DB_URI is a SQLAlchemy/peewee URL (postgresql://...); psycopg takes the libpq form of it.
    url = database_url.replace("postgresql+psycopg://", "postgresql://").replace(
        "postgresql+psycopg2://", "postgresql://"
    )
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            rows = conn.execute("select id, name from logentrykind").fetchall()
    except psycopg.Error as exc:
        raise KindsUnavailable(f"reading Quay's logentrykind table failed: {exc}") from exc
    return {int(i): str(n) for i, n in rows}

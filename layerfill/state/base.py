"""What every part of the state store shares: the engine (pooled connections, one transaction per call), the
clock, the dialect's upsert, the tables and the checks of values every table stores.

Every call takes its own pooled connection and transaction, so one store serves many threads. Writes are single
upserts (INSERT ... ON CONFLICT) wherever they can be, so concurrent fetchers never race between a read and a
write; on SQLite a write transaction takes the file's write lock up front."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection

from layerfill.oci.reference import validate_digest, validate_registry, validate_repository

from .engine import DEFAULT_BUSY_TIMEOUT_MS, WRITE_OPTION, create_state_engine, parse_url, redacted
from .migrate import require_head, upgrade
from .models import Base, Blob, BlobLease, Image, ImageBlob, KeyValue, Scan

ERROR_MAX = 4000  # error texts can embed whole response bodies; keep the row small

# Core tables: upserts and RETURNING read best at this level; rows come back keyed by column name.
images = Base.metadata.tables[Image.__tablename__]
blobs = Base.metadata.tables[Blob.__tablename__]
image_blobs = Base.metadata.tables[ImageBlob.__tablename__]
scans = Base.metadata.tables[Scan.__tablename__]
kv = Base.metadata.tables[KeyValue.__tablename__]
leases = Base.metadata.tables[BlobLease.__tablename__]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def clip(text: str, limit: int = ERROR_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_error(error: object, field: str = "error") -> str:
    if not isinstance(error, str) or not error:
        raise ValueError(f"invalid {field} {error!r}: must be a non-empty string")
    return clip(error)


class StoreBase:
    """The engine and helpers every part of the store builds on; callers open `StateStore` (store.py), which
    takes the same arguments."""

    def __init__(
        self,
        url: str | URL,
        *,
        migrate: bool = True,
        clock: Callable[[], datetime] = _utcnow,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        pool_size: int = 10,
        echo: bool = False,
    ) -> None:
        parsed = parse_url(url)
        self._url = redacted(parsed)
        self._clock = clock
        self._engine = create_state_engine(parsed, busy_timeout_ms=busy_timeout_ms, pool_size=pool_size, echo=echo)
        try:
            if migrate:
                upgrade(self._engine)
            else:
                require_head(self._engine)
        except BaseException:
            self._engine.dispose()
            raise
        self._writer = self._engine.execution_options(**{WRITE_OPTION: True})
        self._dialect = self._engine.dialect.name

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with any password hidden (for logs and `layerfill status`)."""
        return self._url

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._dialect

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock returned a naive datetime; it must be timezone-aware")
        return now.astimezone(UTC)

    def _insert(self, table: sa.Table) -> Any:
        # Both dialects have INSERT ... ON CONFLICT, each through its own construct.
        return (sqlite.insert if self._dialect == "sqlite" else postgresql.insert)(table)

    def _read(self) -> Connection:
        return self._engine.connect()

    @staticmethod
    def _image_key(registry: str, repository: str, digest: str) -> dict[str, str]:
        return {
            "registry": validate_registry(registry),
            "repository": validate_repository(repository),
            "digest": validate_digest(digest),
        }

    @staticmethod
    def _where_image(key: dict[str, str]) -> sa.ColumnElement[bool]:
        return sa.and_(*(images.c[name] == value for name, value in key.items()))

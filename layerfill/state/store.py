"""The state store: what layerfill knows about images, blobs, scans and checkpoints.

Every call takes its own pooled connection and transaction, so one StateStore serves many threads.
Writes are single upserts (INSERT ... ON CONFLICT) wherever they can be, so concurrent fetchers never
race between a read and a write; on SQLite a write transaction takes the file's write lock up front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Row

from layerfill.oci.reference import validate_digest, validate_registry, validate_repository, validate_tag

from .engine import DEFAULT_BUSY_TIMEOUT_MS, WRITE_OPTION, create_state_engine, parse_url, redacted
from .migrate import require_head, upgrade
from .models import Base, Blob, BlobLease, Image, ImageBlob, KeyValue, Scan
from .records import (
    MEDIA_TYPE_MAX,
    BlobRecord,
    ImageBlobRow,
    ImageRow,
    ImageStatus,
    ScanRow,
    ScanState,
    Totals,
    check_count,
    check_optional_count,
    check_optional_text,
    check_text,
    check_vulnerabilities,
    coerce_enum,
)

ERROR_MAX = 4000  # error texts can embed whole response bodies; keep the row small
MISSING_SHOWN = 20  # digests named in a partial image's last_error
LIST_LIMIT_MAX = 10_000

# Core tables: upserts and RETURNING read best at this level; rows come back keyed by column name.
images = Base.metadata.tables[Image.__tablename__]
blobs = Base.metadata.tables[Blob.__tablename__]
image_blobs = Base.metadata.tables[ImageBlob.__tablename__]
scans = Base.metadata.tables[Scan.__tablename__]
kv = Base.metadata.tables[KeyValue.__tablename__]
leases = Base.metadata.tables[BlobLease.__tablename__]

_IMAGE_KEY = ["registry", "repository", "digest"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _clip(text: str, limit: int = ERROR_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_error(error: object, field: str = "error") -> str:
    if not isinstance(error, str) or not error:
        raise ValueError(f"invalid {field} {error!r}: must be a non-empty string")
    return _clip(error)


def _image_row(row: Row[Any]) -> ImageRow:
    return ImageRow(**row._mapping)


def _scan_row(row: Row[Any]) -> ScanRow:
    return ScanRow(**row._mapping)


def _dedupe(records: Sequence[BlobRecord]) -> list[BlobRecord]:
    """One record per (digest, manifest_digest), the table's key within an image; the first one wins."""
    seen: dict[tuple[str, str], BlobRecord] = {}
    for i, record in enumerate(records):
        if not isinstance(record, BlobRecord):
            raise ValueError(f"invalid blobs[{i}]: must be a BlobRecord, got {type(record).__name__}")
        seen.setdefault((record.digest, record.manifest_digest), record)
    return list(seen.values())


class StateStore:
    """The state database at `url` (`sqlite:///path` or `postgresql+psycopg://...`).

    Opening runs the migrations up to the newest revision unless `migrate=False`, in which case a
    database at another revision is refused with SchemaVersionError. Safe to share between threads.
    """

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

    def __enter__(self) -> StateStore:
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

    def _new_image(self, key: dict[str, str], now: datetime, status: ImageStatus, **values: Any) -> dict[str, Any]:
        """Column values for an image row inserted by a call that found none."""
        row: dict[str, Any] = {
            **key,
            "media_type": None,
            "reference": None,
            "status": status,
            "total_bytes": 0,
            "fetched_bytes": 0,
            "blob_count": 0,
            "first_seen_at": now,
            "started_at": now,
            "completed_at": None,
            "updated_at": now,
            "last_error": None,
            "attempts": 1,
            "last_event_id": None,
        }
        row.update(values)
        return row

    def _upsert_image(
        self, conn: Connection, insert_values: dict[str, Any], update: Callable[[Any], dict[str, Any]]
    ) -> ImageRow:
        """Insert `insert_values`, or apply `update(excluded)` to the existing row; return the row."""
        stmt = self._insert(images).values(**insert_values)
        stmt = stmt.on_conflict_do_update(index_elements=_IMAGE_KEY, set_=update(stmt.excluded))
        return _image_row(conn.execute(stmt.returning(*images.c)).one())

    # -- images: the fetcher's fast path ---------------------------------------------------------

    def image_status(self, registry: str, repository: str, digest: str) -> ImageRow | None:
        """The image's row, or None if never seen: one lookup on the (registry, repository, digest) index."""
        key = self._image_key(registry, repository, digest)
        with self._read() as conn:
            row = conn.execute(sa.select(images).where(self._where_image(key))).first()
        return None if row is None else _image_row(row)

    def is_complete(self, registry: str, repository: str, digest: str) -> bool:
        key = self._image_key(registry, repository, digest)
        with self._read() as conn:
            status = conn.execute(sa.select(images.c.status).where(self._where_image(key))).scalar()
        return status is ImageStatus.COMPLETE

    # -- images: transitions ---------------------------------------------------------------------

    def mark_pending(
        self,
        registry: str,
        repository: str,
        digest: str,
        *,
        event_id: str,
        media_type: str | None = None,
        reference: str | None = None,
    ) -> ImageRow:
        """Record that an image awaits a fill (e.g. a retry is queued). New, failed and partial images
        become pending; one complete or being filled keeps its status. Does not count an attempt."""
        key = self._image_key(registry, repository, digest)
        event_id_ = check_text(event_id, "event_id")
        media_type_ = check_optional_text(media_type, "media_type", max_length=MEDIA_TYPE_MAX)
        reference_ = None if reference is None else validate_tag(reference, "reference")
        now = self._now()
        insert_values = self._new_image(
            key,
            now,
            ImageStatus.PENDING,
            media_type=media_type_,
            reference=reference_,
            started_at=None,
            attempts=0,
            last_event_id=event_id_,
        )
        keep = images.c.status.in_([ImageStatus.COMPLETE, ImageStatus.FILLING])
        with self._writer.begin() as conn:
            return self._upsert_image(
                conn,
                insert_values,
                lambda excluded: {
                    "status": sa.case((keep, images.c.status), else_=excluded.status),
                    "media_type": sa.func.coalesce(excluded.media_type, images.c.media_type),
                    "reference": sa.func.coalesce(excluded.reference, images.c.reference),
                    "last_event_id": excluded.last_event_id,
                    "updated_at": now,
                },
            )

    def mark_filling(
        self,
        registry: str,
        repository: str,
        digest: str,
        *,
        event_id: str,
        media_type: str | None = None,
        reference: str | None = None,
    ) -> ImageRow:
        """Start (or restart) a fill: status filling, attempts + 1. A media type or tag not given keeps
        the one already recorded."""
        key = self._image_key(registry, repository, digest)
        event_id_ = check_text(event_id, "event_id")
        media_type_ = check_optional_text(media_type, "media_type", max_length=MEDIA_TYPE_MAX)
        reference_ = None if reference is None else validate_tag(reference, "reference")
        now = self._now()
        insert_values = self._new_image(
            key, now, ImageStatus.FILLING, media_type=media_type_, reference=reference_, last_event_id=event_id_
        )
        with self._writer.begin() as conn:
            return self._upsert_image(
                conn,
                insert_values,
                lambda excluded: {
                    "status": ImageStatus.FILLING,
                    "attempts": images.c.attempts + 1,
                    "started_at": now,
                    "completed_at": None,
                    "media_type": sa.func.coalesce(excluded.media_type, images.c.media_type),
                    "reference": sa.func.coalesce(excluded.reference, images.c.reference),
                    "last_event_id": excluded.last_event_id,
                    "updated_at": now,
                },
            )

    def mark_complete(
        self,
        registry: str,
        repository: str,
        digest: str,
        *,
        total_bytes: int,
        fetched_bytes: int,
        blobs: Sequence[BlobRecord],
        event_id: str | None = None,
    ) -> ImageRow:
        """The image is complete in storage. Records every blob (kept once, shared between images) and
        replaces the image's blob list with `blobs`, all in one transaction."""
        key = self._image_key(registry, repository, digest)
        total = check_count(total_bytes, "total_bytes")
        fetched = check_count(fetched_bytes, "fetched_bytes")
        event_id_ = check_optional_text(event_id, "event_id")
        records = _dedupe(blobs)
        now = self._now()
        insert_values = self._new_image(
            key,
            now,
            ImageStatus.COMPLETE,
            total_bytes=total,
            fetched_bytes=fetched,
            blob_count=len(records),
            completed_at=now,
            last_event_id=event_id_,
        )
        with self._writer.begin() as conn:
            # The image upsert comes first: it locks the image's row, so two completions of the same
            # image take turns at replacing its blob list instead of colliding on its primary key.
            image = self._upsert_image(
                conn,
                insert_values,
                lambda excluded: {
                    "status": ImageStatus.COMPLETE,
                    "total_bytes": excluded.total_bytes,
                    "fetched_bytes": excluded.fetched_bytes,
                    "blob_count": excluded.blob_count,
                    "completed_at": now,
                    "last_error": None,
                    "last_event_id": sa.func.coalesce(excluded.last_event_id, images.c.last_event_id),
                    "updated_at": now,
                },
            )
            self._record_blobs(conn, image.id, records, now)
        return image

    def _record_blobs(self, conn: Connection, image_id: int, records: list[BlobRecord], now: datetime) -> None:
        conn.execute(sa.delete(image_blobs).where(image_blobs.c.image_id == image_id))
        if not records:
            return
        by_digest: dict[str, BlobRecord] = {}
        for record in records:
            by_digest.setdefault(record.digest, record)
        # Sorted: concurrent transactions then lock blob keys in one order and cannot deadlock.
        blob_rows = [
            {"digest": d, "size": r.size, "media_type": r.media_type, "first_stored_at": now}
            for d, r in sorted(by_digest.items())
        ]
        conn.execute(self._insert(blobs).on_conflict_do_nothing(index_elements=["digest"]), blob_rows)
        conn.execute(
            sa.insert(image_blobs),
            [
                {
                    "image_id": image_id,
                    "digest": r.digest,
                    "manifest_digest": r.manifest_digest,
                    "kind": r.kind,
                    "outcome": r.outcome,
                }
                for r in records
            ],
        )

    def mark_failed(
        self, registry: str, repository: str, digest: str, *, error: str, event_id: str | None = None
    ) -> ImageRow:
        """The fill failed; `error` (clipped to ERROR_MAX characters) goes to last_error."""
        key = self._image_key(registry, repository, digest)
        error_ = _check_error(error)
        event_id_ = check_optional_text(event_id, "event_id")
        now = self._now()
        insert_values = self._new_image(key, now, ImageStatus.FAILED, last_error=error_, last_event_id=event_id_)
        with self._writer.begin() as conn:
            return self._upsert_image(
                conn,
                insert_values,
                lambda excluded: {
                    "status": ImageStatus.FAILED,
                    "last_error": excluded.last_error,
                    "completed_at": None,
                    "last_event_id": sa.func.coalesce(excluded.last_event_id, images.c.last_event_id),
                    "updated_at": now,
                },
            )

    def mark_partial(
        self,
        registry: str,
        repository: str,
        digest: str,
        *,
        missing: Sequence[str],
        total_bytes: int | None = None,
        fetched_bytes: int | None = None,
        event_id: str | None = None,
    ) -> ImageRow:
        """The fill ended with blobs still missing; last_error names them (the first MISSING_SHOWN).
        Byte counts not given keep their recorded values."""
        key = self._image_key(registry, repository, digest)
        if isinstance(missing, str) or not missing:
            raise ValueError(f"invalid missing {missing!r}: must be a non-empty list of digests")
        missing_ = [validate_digest(d, f"missing[{i}]") for i, d in enumerate(missing)]
        total = check_optional_count(total_bytes, "total_bytes")
        fetched = check_optional_count(fetched_bytes, "fetched_bytes")
        event_id_ = check_optional_text(event_id, "event_id")
        shown = ", ".join(missing_[:MISSING_SHOWN])
        more = len(missing_) - MISSING_SHOWN
        message = _clip(f"{len(missing_)} blob(s) missing: {shown}" + (f" and {more} more" if more > 0 else ""))
        now = self._now()
        insert_values = self._new_image(
            key,
            now,
            ImageStatus.PARTIAL,
            total_bytes=total or 0,
            fetched_bytes=fetched or 0,
            last_error=message,
            last_event_id=event_id_,
        )
        update: dict[str, Any] = {"status": ImageStatus.PARTIAL, "last_error": message, "completed_at": None}
        if total is not None:
            update["total_bytes"] = total
        if fetched is not None:
            update["fetched_bytes"] = fetched
        with self._writer.begin() as conn:
            return self._upsert_image(
                conn,
                insert_values,
                lambda excluded: {
                    **update,
                    "last_event_id": sa.func.coalesce(excluded.last_event_id, images.c.last_event_id),
                    "updated_at": now,
                },
            )

    def forget_image(self, registry: str, repository: str, digest: str) -> bool:
        """Delete the image and its blob list (blobs themselves stay: other images share them).
        True if there was such an image."""
        key = self._image_key(registry, repository, digest)
        with self._writer.begin() as conn:
            # FOR UPDATE (PostgreSQL): a completion racing this delete waits instead of half-surviving it.
            image_id = conn.execute(sa.select(images.c.id).where(self._where_image(key)).with_for_update()).scalar()
            if image_id is None:
                return False
            conn.execute(sa.delete(image_blobs).where(image_blobs.c.image_id == image_id))
            conn.execute(sa.delete(images).where(images.c.id == image_id))
        return True

    # -- images: reporting -----------------------------------------------------------------------

    def list_images(
        self,
        status: ImageStatus | str | None = None,
        repository_prefix: str | None = None,
        *,
        registry: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ImageRow]:
        """Images, most recently updated first, optionally filtered by status, registry and repository prefix."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
            raise ValueError(f"invalid limit {limit!r}: must be an integer from 1 to {LIST_LIMIT_MAX}")
        check_count(offset, "offset")
        stmt = sa.select(images)
        if status is not None:
            stmt = stmt.where(images.c.status == coerce_enum(ImageStatus, status, "status"))
        if registry is not None:
            stmt = stmt.where(images.c.registry == validate_registry(registry))
        if repository_prefix is not None:
            prefix = check_text(repository_prefix, "repository_prefix")
            # autoescape: '_' is common in repository names and must not act as a LIKE wildcard.
            stmt = stmt.where(images.c.repository.startswith(prefix, autoescape=True))
        stmt = stmt.order_by(images.c.updated_at.desc(), images.c.id.desc()).limit(limit).offset(offset)
        with self._read() as conn:
            return [_image_row(row) for row in conn.execute(stmt)]

    def image_blobs(self, registry: str, repository: str, digest: str) -> list[ImageBlobRow]:
        """The blobs recorded when the image last completed (empty if it never did), for `verify`."""
        key = self._image_key(registry, repository, digest)
        stmt = (
            sa.select(
                image_blobs.c.digest,
                blobs.c.size,
                blobs.c.media_type,
                image_blobs.c.kind,
                image_blobs.c.manifest_digest,
                image_blobs.c.outcome,
            )
            .join(blobs, blobs.c.digest == image_blobs.c.digest)
            .join(images, images.c.id == image_blobs.c.image_id)
            .where(self._where_image(key))
            .order_by(image_blobs.c.manifest_digest, image_blobs.c.kind, image_blobs.c.digest)
        )
        with self._read() as conn:
            return [ImageBlobRow(**row._mapping) for row in conn.execute(stmt)]

    def totals(self) -> Totals:
        """Counts per image status and scan state (every value present, zeros included) and byte sums."""
        per_status = {s.value: 0 for s in ImageStatus}
        per_state = {s.value: 0 for s in ScanState}
        total_bytes = fetched_bytes = 0
        with self._read() as conn:
            for status, count, total, fetched in conn.execute(
                sa.select(
                    images.c.status,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(images.c.total_bytes), 0),
                    sa.func.coalesce(sa.func.sum(images.c.fetched_bytes), 0),
                ).group_by(images.c.status)
            ):
                per_status[ImageStatus(status).value] = count
                total_bytes += int(total)
                fetched_bytes += int(fetched)
            blob_count, blob_bytes = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(blobs.c.size), 0))
            ).one()
            for state, count in conn.execute(sa.select(scans.c.state, sa.func.count()).group_by(scans.c.state)):
                per_state[ScanState(state).value] = count
        return Totals(
            images=per_status,
            image_count=sum(per_status.values()),
            total_bytes=total_bytes,
            fetched_bytes=fetched_bytes,
            blobs=int(blob_count),
            blob_bytes=int(blob_bytes),
            scans=per_state,
        )

    # -- scans -----------------------------------------------------------------------------------

    def record_scan(
        self,
        registry: str,
        repository: str,
        manifest_digest: str,
        *,
        scanner: str,
        state: ScanState | str,
        scanner_version: str | None = None,
        package_count: int | None = None,
        vulnerabilities: dict[str, int] | None = None,
        report_uri: str | None = None,
        error: str | None = None,
    ) -> ScanRow:
        """Record a scan's latest state; the row then holds exactly the values given here.

        A `pending` record starts an attempt (attempts + 1, requested_at = now); a final state
        (indexed, index_error, unsupported) completes the pending attempt (finished_at = now), or
        counts as an attempt of its own when none was pending.
        """
        registry_ = validate_registry(registry)
        repository_ = validate_repository(repository)
        manifest_digest_ = validate_digest(manifest_digest, "manifest_digest")
        state_ = coerce_enum(ScanState, state, "state")
        values = {
            "registry": registry_,
            "repository": repository_,
            "manifest_digest": manifest_digest_,
            "scanner": check_text(scanner, "scanner"),
            "scanner_version": check_optional_text(scanner_version, "scanner_version"),
            "state": state_,
            "package_count": check_optional_count(package_count, "package_count"),
            "vulnerabilities": check_vulnerabilities(vulnerabilities),
            "report_uri": check_optional_text(report_uri, "report_uri", max_length=ERROR_MAX),
            "error": None if error is None else _check_error(error),
        }
        now = self._now()
        stmt = self._insert(scans).values(
            **values,
            attempts=1,
            requested_at=now,
            finished_at=None if state_ is ScanState.PENDING else now,
        )
        excluded = stmt.excluded
        new_attempt = sa.or_(excluded.state == ScanState.PENDING, scans.c.state != ScanState.PENDING)
        stmt = stmt.on_conflict_do_update(
            index_elements=["registry", "manifest_digest"],
            set_={
                **{name: excluded[name] for name in values if name not in ("registry", "manifest_digest")},
                "attempts": sa.case((new_attempt, scans.c.attempts + 1), else_=scans.c.attempts),
                "requested_at": sa.case((new_attempt, excluded.requested_at), else_=scans.c.requested_at),
                "finished_at": excluded.finished_at,
            },
        )
        with self._writer.begin() as conn:
            return _scan_row(conn.execute(stmt.returning(*scans.c)).one())

    def scan_for(self, registry: str, manifest_digest: str) -> ScanRow | None:
        """The latest scan of this manifest in this registry, whichever repository it was pulled from."""
        registry_ = validate_registry(registry)
        digest_ = validate_digest(manifest_digest, "manifest_digest")
        stmt = sa.select(scans).where(scans.c.registry == registry_, scans.c.manifest_digest == digest_)
        with self._read() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _scan_row(row)

    # -- blob leases: one upstream GET per blob across the consumer group --------------------------

    def acquire_blob_lease(self, digest: str, holder: str, ttl_s: float) -> bool:
        """Take the lease on `digest` for `ttl_s` seconds (or renew it, when `holder` has it already). False while
        another holder's lease runs. One upsert: two fetchers racing for it cannot both win."""
        digest_ = validate_digest(digest)
        holder_ = check_text(holder, "holder")
        if not isinstance(ttl_s, int | float) or isinstance(ttl_s, bool) or ttl_s <= 0:
            raise ValueError(f"invalid ttl_s {ttl_s!r}: must be a positive number")
        now = self._now()
        expires = now + timedelta(seconds=float(ttl_s))
        stmt = self._insert(leases).values(digest=digest_, holder=holder_, acquired_at=now, expires_at=expires)
        free = sa.or_(leases.c.expires_at <= now, leases.c.holder == holder_)
        stmt = stmt.on_conflict_do_update(
            index_elements=["digest"],
            set_={
                "holder": holder_,
                "expires_at": expires,
                "acquired_at": sa.case(
                    (leases.c.holder == holder_, leases.c.acquired_at), else_=stmt.excluded.acquired_at
                ),
            },
            where=free,
        )
        with self._writer.begin() as conn:
            row = conn.execute(stmt.returning(leases.c.holder)).first()
        return row is not None and row.holder == holder_

    def renew_blob_lease(self, digest: str, holder: str, ttl_s: float) -> bool:
        """Extend `holder`'s lease by `ttl_s` from now; False when it holds none (released, or taken after expiry)."""
        digest_ = validate_digest(digest)
        holder_ = check_text(holder, "holder")
        expires = self._now() + timedelta(seconds=float(ttl_s))
        with self._writer.begin() as conn:
            stmt = (
                sa.update(leases)
                .where(leases.c.digest == digest_, leases.c.holder == holder_)
                .values(expires_at=expires)
            )
            return conn.execute(stmt).rowcount > 0

    def release_blob_lease(self, digest: str, holder: str) -> bool:
        """Give the lease back (only `holder`'s own); True when there was one to give back."""
        digest_ = validate_digest(digest)
        holder_ = check_text(holder, "holder")
        with self._writer.begin() as conn:
            stmt = sa.delete(leases).where(leases.c.digest == digest_, leases.c.holder == holder_)
            return conn.execute(stmt).rowcount > 0

    def release_blob_leases_of(self, holder_prefix: str) -> int:
        """Drop every lease whose holder starts with `holder_prefix` (a restarted process's predecessor)."""
        prefix = check_text(holder_prefix, "holder_prefix")
        with self._writer.begin() as conn:
            stmt = sa.delete(leases).where(sa.func.substr(leases.c.holder, 1, len(prefix)) == prefix)
            return conn.execute(stmt).rowcount

    def blob_lease_holder(self, digest: str) -> str | None:
        """Who holds a lease on `digest` that has not expired, if anyone."""
        digest_ = validate_digest(digest)
        now = self._now()
        with self._read() as conn:
            stmt = sa.select(leases.c.holder).where(leases.c.digest == digest_, leases.c.expires_at > now)
            return conn.execute(stmt).scalar()

    def purge_expired_blob_leases(self) -> int:
        with self._writer.begin() as conn:
            return conn.execute(sa.delete(leases).where(leases.c.expires_at <= self._now())).rowcount

    # -- checkpoints -----------------------------------------------------------------------------

    def get_kv(self, key: str) -> str | None:
        key_ = check_text(key, "key")
        with self._read() as conn:
            return conn.execute(sa.select(kv.c.value).where(kv.c.key == key_)).scalar()

    def set_kv(self, key: str, value: str) -> None:
        key_ = check_text(key, "key")
        if not isinstance(value, str):
            raise ValueError(f"invalid value for key {key_!r}: must be a string, got {type(value).__name__}")
        now = self._now()
        stmt = self._insert(kv).values(key=key_, value=value, updated_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": now})
        with self._writer.begin() as conn:
            conn.execute(stmt)

    def delete_kv(self, key: str) -> bool:
        key_ = check_text(key, "key")
        with self._writer.begin() as conn:
            return conn.execute(sa.delete(kv).where(kv.c.key == key_)).rowcount > 0

"""The state store's images: the fetcher's fast path (is it complete?), the transitions of a fill, the blobs an
image was completed with, and the reports over them (`layerfill status`, the status page)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from layerfill.oci.reference import validate_digest, validate_tag

from .base import StoreBase, blobs, check_error, clip, image_blobs, images
from .records import (
    MEDIA_TYPE_MAX,
    BlobRecord,
    ImageRow,
    ImageStatus,
    check_count,
    check_optional_count,
    check_optional_text,
    check_text,
)

MISSING_SHOWN = 20  # digests named in a partial image's last_error

_IMAGE_KEY = ["registry", "repository", "digest"]


def image_row(row: Row[Any]) -> ImageRow:
    return ImageRow(**row._mapping)


def _dedupe(records: Sequence[BlobRecord]) -> list[BlobRecord]:
    """One record per (digest, manifest_digest), the table's key within an image; the first one wins."""
    seen: dict[tuple[str, str], BlobRecord] = {}
    for i, record in enumerate(records):
        if not isinstance(record, BlobRecord):
            raise ValueError(f"invalid blobs[{i}]: must be a BlobRecord, got {type(record).__name__}")
        seen.setdefault((record.digest, record.manifest_digest), record)
    return list(seen.values())


class ImageQueries(StoreBase):
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
        return image_row(conn.execute(stmt.returning(*images.c)).one())

    # -- images: the fetcher's fast path ---------------------------------------------------------

    def image_status(self, registry: str, repository: str, digest: str) -> ImageRow | None:
        """The image's row, or None if never seen: one lookup on the (registry, repository, digest) index."""
        key = self._image_key(registry, repository, digest)
        with self._read() as conn:
            row = conn.execute(sa.select(images).where(self._where_image(key))).first()
        return None if row is None else image_row(row)

    def is_complete(self, registry: str, repository: str, digest: str) -> bool:
        key = self._image_key(registry, repository, digest)
        with self._read() as conn:
            status = conn.execute(sa.select(images.c.status).where(self._where_image(key))).scalar()
        return status is ImageStatus.COMPLETE

    def recently_complete(self, limit: int) -> list[tuple[str, str, str]]:
        """(registry, repository, digest) of up to `limit` complete images, the most recently updated first: what
        a starting fetcher knows without a lookup per image (on the (status, updated_at) index)."""
        check_count(limit, "limit")
        query = (
            sa.select(images.c.registry, images.c.repository, images.c.digest)
            .where(images.c.status == ImageStatus.COMPLETE)
            .order_by(images.c.updated_at.desc())
            .limit(limit)
        )
        with self._read() as conn:
            return [(r, repo, d) for r, repo, d in conn.execute(query)]

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
        event_id_, media_type_, reference_ = _event_fields(event_id, media_type, reference)
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
                    **_event_updates(excluded, now),
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
        event_id_, media_type_, reference_ = _event_fields(event_id, media_type, reference)
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
                    **_event_updates(excluded, now),
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
        error_ = check_error(error)
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
        message = clip(f"{len(missing_)} blob(s) missing: {shown}" + (f" and {more} more" if more > 0 else ""))
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


def _event_fields(event_id: str, media_type: str | None, reference: str | None) -> tuple[str, str | None, str | None]:
    """The event's fields an image row records, checked (ValueError naming the field)."""
    return (
        check_text(event_id, "event_id"),
        check_optional_text(media_type, "media_type", max_length=MEDIA_TYPE_MAX),
        None if reference is None else validate_tag(reference, "reference"),
    )


def _event_updates(excluded: Any, now: datetime) -> dict[str, Any]:
    """An upsert's update of the event's fields: a media type or tag the event lacks keeps the recorded one."""
    return {
        "media_type": sa.func.coalesce(excluded.media_type, images.c.media_type),
        "reference": sa.func.coalesce(excluded.reference, images.c.reference),
        "last_event_id": excluded.last_event_id,
        "updated_at": now,
    }

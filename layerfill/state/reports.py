"""The state store's reports: images listed and counted, the blobs an image was completed with (`layerfill
status`, `verify`, the status page)."""

from __future__ import annotations

import sqlalchemy as sa

from layerfill.oci.reference import validate_registry

from .base import StoreBase, blobs, image_blobs, images, scans
from .images import image_row
from .records import ImageBlobRow, ImageRow, ImageStatus, ScanState, Totals, check_count, check_text, coerce_enum

LIST_LIMIT_MAX = 10_000


class ImageReports(StoreBase):
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
            return [image_row(row) for row in conn.execute(stmt)]

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

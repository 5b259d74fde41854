"""The state store's blob leases: one upstream GET per blob across the consumer group (consumers/fetcher/leases.py)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from layerfill.oci.reference import validate_digest

from .base import StoreBase, leases
from .records import check_text


class BlobLeaseQueries(StoreBase):
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

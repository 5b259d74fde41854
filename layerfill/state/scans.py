"""The state store's scans: the latest Clair scan of each manifest per registry."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from layerfill.oci.reference import validate_digest, validate_registry, validate_repository

from .base import ERROR_MAX, StoreBase, check_error, scans
from .records import (
    ScanRow,
    ScanState,
    check_optional_count,
    check_optional_text,
    check_text,
    check_vulnerabilities,
    coerce_enum,
)


def _scan_row(row: Row[Any]) -> ScanRow:
    return ScanRow(**row._mapping)


class ScanQueries(StoreBase):
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
            "error": None if error is None else check_error(error),
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

"""Audit one manifest revision in the cache's storage: walk it from the stored bytes by the route's rules (the
walk the fetcher fills by, layerfill/oci/walk.py), then check that every child manifest and blob it reaches is
there, linked into the repository, with the planned size.

The storage is a small protocol (DistributionSink satisfies it), so the audit is tested without S3."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from layerfill.oci.manifest import ManifestError
from layerfill.oci.plan import PlanError
from layerfill.oci.walk import ManifestWalk, Visit, WalkRules
from layerfill.sinks.base import BlobNotFound, BlobTooLarge, Presence, SinkIntegrityError

ItemKind = Literal["manifest", "config", "layer"]
Reason = Literal["absent", "not_linked", "wrong_size", "wrong_digest", "unreadable"]


class AuditStatus(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"  # some planned manifests or blobs are missing: named in `missing`
    UNKNOWN = "unknown"  # the root manifest's bytes are not in storage (or cannot be planned)


class AuditStorage(Protocol):
    def read_blob_bytes(self, digest: str) -> bytes: ...
    def blob_size(self, digest: str) -> int | None: ...
    def blob_presence(self, repository: str, digest: str) -> Presence: ...
    def manifest_presence(self, repository: str, digest: str) -> Presence: ...


# Deep mode: re-hash stored data; returns the digest the bytes hash to, or None when there is no data.
Hasher = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class MissingItem:
    digest: str
    kind: ItemKind
    size: int
    reason: Reason
    manifest_digest: str | None  # the manifest or index that names it


@dataclass(slots=True)
class ImageAudit:
    repository: str
    digest: str
    status: AuditStatus
    tags: list[str] = field(default_factory=list)
    media_type: str | None = None
    missing: list[MissingItem] = field(default_factory=list)
    checked: int = 0  # manifests and blobs looked at
    total_bytes: int = 0
    detail: str | None = None  # why the status is unknown

    def to_dict(self) -> dict[str, object]:
        return {
            "repository": self.repository,
            "digest": self.digest,
            "status": str(self.status),
            "tags": self.tags,
            "media_type": self.media_type,
            "missing": [
                {"digest": m.digest, "kind": m.kind, "size": m.size, "reason": m.reason, "manifest": m.manifest_digest}
                for m in self.missing
            ],
            "checked": self.checked,
            "total_bytes": self.total_bytes,
            "detail": self.detail,
        }


def _presence_reason(presence: Presence) -> Reason | None:
    if presence is Presence.LINKED:
        return None
    return "not_linked" if presence is Presence.DATA_ONLY else "absent"


def audit_manifest(
    storage: AuditStorage,
    repository: str,
    digest: str,
    *,
    tags: list[str] | None = None,
    rules: WalkRules | None = None,
    hasher: Hasher | None = None,
) -> ImageAudit:
    """Audit `repository@digest`, walked by `rules` (the route's, as the fetcher fills it; None: every platform).
    Never raises for content problems: they become `unknown` or `missing`."""
    result = ImageAudit(repository, digest, AuditStatus.UNKNOWN, tags=list(tags or []))
    try:
        root = storage.read_blob_bytes(digest)
    except BlobNotFound:
        result.detail = "manifest bytes are not in storage"
        return result
    except (BlobTooLarge, SinkIntegrityError) as exc:
        result.detail = f"manifest unreadable: {exc}"
        return result
    walk = ManifestWalk(digest, len(root), rules)
    try:
        visit = walk.visit(digest, root)
    except (ManifestError, PlanError) as exc:
        result.detail = f"manifest cannot be planned: {exc}"
        return result
    result.media_type = visit.document.media_type
    result.checked = 1
    try:
        _walk_children(storage, repository, walk, digest, visit, result)
    except PlanError as exc:
        result.detail = f"manifest cannot be planned: {exc}"
        return result
    plan = walk.plan
    for blob in plan.blobs:
        result.checked += 1
        reason = _check_blob(storage, repository, blob.digest, blob.size, hasher)
        if reason is not None:
            result.missing.append(MissingItem(blob.digest, blob.kind, blob.size, reason, blob.manifest_digest))
    result.total_bytes = plan.total_bytes
    result.status = AuditStatus.PARTIAL if result.missing else AuditStatus.COMPLETE
    return result


def _walk_children(
    storage: AuditStorage, repository: str, walk: ManifestWalk, digest: str, visit: Visit, result: ImageAudit
) -> None:
    """Every child of `digest` (already visited) the stored bytes let us reach, depth first."""
    for child in visit.children:
        result.checked += 1
        reason = _presence_reason(storage.manifest_presence(repository, child.digest))
        if reason == "absent":
            result.missing.append(MissingItem(child.digest, "manifest", child.size, "absent", digest))
            continue  # its blobs cannot be planned without its bytes
        try:
            child_bytes = storage.read_blob_bytes(child.digest)
            if len(child_bytes) != child.size:
                raise ValueError(f"{len(child_bytes)} bytes, {child.size} declared")
            child_visit = walk.visit(child.digest, child_bytes)
        except PlanError:
            raise
        except (BlobNotFound, BlobTooLarge, SinkIntegrityError, ManifestError, ValueError):
            reason = "unreadable"
        else:
            _walk_children(storage, repository, walk, child.digest, child_visit, result)
        if reason is not None:
            result.missing.append(MissingItem(child.digest, "manifest", child.size, reason, digest))


def _check_blob(storage: AuditStorage, repository: str, digest: str, size: int, hasher: Hasher | None) -> Reason | None:
    reason = _presence_reason(storage.blob_presence(repository, digest))
    if reason == "absent":
        return reason
    if storage.blob_size(digest) != size:
        return "wrong_size"
    if hasher is not None and hasher(digest) != digest:
        return "wrong_digest"
    return reason

"""Resolve: the manifest bytes for a digest, from the event when they hash to it, else from the upstream."""

from __future__ import annotations

from dataclasses import dataclass

from layerfill.oci.digest import DigestMismatch, digest_of
from layerfill.oci.manifest import MAX_MANIFEST_BYTES
from layerfill.remote.client import RegistryClient


@dataclass(frozen=True)
class ResolvedManifest:
    digest: str
    media_type: str | None
    data: bytes
    from_event: bool


def resolve_manifest(
    client: RegistryClient,
    upstream_repository: str,
    digest: str,
    event_bytes: bytes | None = None,
    event_media_type: str | None = None,
) -> ResolvedManifest:
    if event_bytes is not None and len(event_bytes) <= MAX_MANIFEST_BYTES and digest_of(event_bytes) == digest:
        return ResolvedManifest(digest, event_media_type, event_bytes, True)
    got = client.get_manifest(upstream_repository, digest)
    actual = digest_of(got.content)
    if actual != digest:  # the client verifies too; a second look costs little for a few KiB
        raise DigestMismatch(digest, actual)
    return ResolvedManifest(digest, got.media_type, got.content, False)

"""Resolve: the manifest bytes for a digest, from wherever they cost the upstream nothing first.

1. the event's bytes, when they hash to its digest;
2. the cache's own copy (the sink's `read_manifest`): a proxy stores the manifest it serves before it notifies,
   so the pulled manifest is always there, and so is every child of an index some client pulled;
3. only then the upstream, by digest: children of an index nobody pulled, or a manifest the cache lost.
A manifest GET is what Docker Hub counts as a pull against its rate limit, so step 3 is the exception."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from layerfill.oci.digest import DigestMismatch, digest_of
from layerfill.oci.manifest import MAX_MANIFEST_BYTES
from layerfill.remote.client import Manifest

Source = Literal["event", "cache", "upstream"]


@dataclass(frozen=True)
class ResolvedManifest:
    digest: str
    media_type: str | None
    data: bytes
    source: Source


def _matches(data: bytes | None, digest: str) -> bool:
    return data is not None and len(data) <= MAX_MANIFEST_BYTES and digest_of(data) == digest


def resolve_manifest(
    digest: str,
    *,
    upstream: Callable[[], Manifest],
    cache: Callable[[], bytes | None] | None = None,
    event_bytes: bytes | None = None,
    event_media_type: str | None = None,
) -> ResolvedManifest:
    """`cache()` returns the cache's copy or None; `upstream()` GETs it by digest (called only when needed)."""
    if _matches(event_bytes, digest):
        assert event_bytes is not None
        return ResolvedManifest(digest, event_media_type, event_bytes, "event")
    cached = cache() if cache is not None else None
    if _matches(cached, digest):
        assert cached is not None
        # The stored bytes carry no Content-Type; the planner reads the manifest's own mediaType field.
        return ResolvedManifest(digest, event_media_type, cached, "cache")
    got = upstream()
    actual = digest_of(got.content)
    if actual != digest:  # the client verifies too; a second look costs little for a few KiB
        raise DigestMismatch(digest, actual)
    return ResolvedManifest(digest, got.media_type, got.content, "upstream")

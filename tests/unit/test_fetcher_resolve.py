"""Resolve: event bytes, then the cache's copy, then (only then) one upstream GET."""

from __future__ import annotations

import hashlib

import pytest

from layerfill.consumers.fetcher.resolve import resolve_manifest
from layerfill.oci.digest import DigestMismatch
from layerfill.remote.client import Manifest

pytestmark = pytest.mark.unit

DATA = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
OCI = "application/vnd.oci.image.manifest.v1+json"


class Upstream:
    def __init__(self, content: bytes = DATA) -> None:
        self.calls = 0
        self.content = content

    def __call__(self) -> Manifest:
        self.calls += 1
        return Manifest(self.content, OCI, DIGEST)


def test_event_bytes_first() -> None:
    up = Upstream()
    got = resolve_manifest(DIGEST, upstream=up, cache=lambda: pytest.fail("cache read"), event_bytes=DATA,
                           event_media_type=OCI)  # fmt: skip
    assert (got.source, got.data, up.calls) == ("event", DATA, 0)


def test_cache_before_upstream() -> None:
    up = Upstream()
    got = resolve_manifest(DIGEST, upstream=up, cache=lambda: DATA, event_bytes=b"not it")
    assert (got.source, got.data, up.calls) == ("cache", DATA, 0)


@pytest.mark.parametrize("cached", [None, b"damaged copy"])
def test_upstream_only_when_the_cache_has_no_good_copy(cached: bytes | None) -> None:
    up = Upstream()
    got = resolve_manifest(DIGEST, upstream=up, cache=lambda: cached)
    assert (got.source, got.media_type, up.calls) == ("upstream", OCI, 1)


def test_upstream_bytes_are_verified() -> None:
    with pytest.raises(DigestMismatch):
        resolve_manifest(DIGEST, upstream=Upstream(b"{}"), cache=lambda: None)

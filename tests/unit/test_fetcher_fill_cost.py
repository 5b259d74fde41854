"""The fill's upstream cost, with an in-memory sink and an in-process upstream (tests/unit/registry_fake.py):
the pulled manifest read from the cache, blobs a client's pull stores while the fetcher waits never fetched,
skipped ones fetched once, repairs not waiting."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import pytest

from layerfill.config.settings import Settings
from layerfill.consumers.fetcher.fill import ImageFiller, Resources
from layerfill.oci.digest import digest_of
from layerfill.serde import events
from layerfill.serde.records import ManifestPulled
from layerfill.sinks.base import BlobSource, BlobSpec, Presence, Sink, StoreResult
from tests.unit.registry_fake import FakeRegistry

pytestmark = pytest.mark.unit

OCI = "application/vnd.oci.image.manifest.v1+json"
REPO = "p/app"


class MemorySink(Sink):
    name = "memory"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.links: set[tuple[str, str]] = set()
        self.uploads: dict[str, float] = {}
        self.lock = threading.Lock()

    def blob_presence(self, repository: str, digest: str) -> Presence:
        with self.lock:
            if digest not in self.data:
                return Presence.ABSENT
            return Presence.LINKED if (repository, digest) in self.links else Presence.DATA_ONLY

    manifest_presence = blob_presence

    def store_blob(self, repository: str, blob: BlobSpec, source: BlobSource) -> StoreResult:
        if self.blob_presence(repository, blob.digest) is not Presence.ABSENT:
            with self.lock:
                self.links.add((repository, blob.digest))
            return StoreResult("linked", 0)
        src: AbstractContextManager[Any] = source()
        with src as chunks:
            data = b"".join(chunks)
        assert digest_of(data) == blob.digest
        self.put(repository, blob.digest, data)
        return StoreResult("fetched", len(data))

    def store_manifest(self, repository: str, digest: str, media_type: str, data: bytes) -> StoreResult:
        self.put(repository, digest, data)
        return StoreResult("linked", 0)

    def read_manifest(self, repository: str, digest: str) -> bytes | None:
        with self.lock:
            return self.data.get(digest)

    def uploads_in_progress(self, repository: str) -> dict[str, float]:
        with self.lock:
            return dict(self.uploads)

    def put(self, repository: str, digest: str, data: bytes) -> None:
        with self.lock:
            self.data[digest] = data
            self.links.add((repository, digest))

    def close(self) -> None:
        pass


@pytest.fixture
def upstream():
    with FakeRegistry() as reg:
        yield reg


def _image(reg: FakeRegistry, layers: list[bytes]) -> tuple[str, bytes, dict[str, bytes]]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    blobs = {reg.add_blob(REPO, b): b for b in [config, *layers]}
    digests = list(blobs)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0], "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(blobs[d])}
                   for d in digests[1:]],
    }).encode()  # fmt: skip
    return reg.add_manifest(REPO, manifest), manifest, blobs


def _filler(reg: FakeRegistry, sink: MemorySink, **cost: float) -> ImageFiller:
    route = {"registry": "cache.test:5000", "upstream_url": reg.url, "sink": "distribution",
             "upstream_cost": {"grace_s": 0.5, "idle_s": 0.3, "poll_s": 0.05, **cost}}  # fmt: skip
    settings = Settings(routes=[route])
    return ImageFiller(settings, Resources(settings, lambda _r: sink), ThreadPoolExecutor(4))


def _event(digest: str, pulled_at: datetime | None = None) -> ManifestPulled:
    return ManifestPulled.from_avro(
        events.manifest_pulled(
            event_id="e1",
            source="distribution",
            registry="cache.test:5000",
            repository=REPO,
            digest=digest,
            media_type=OCI,
            occurred_at=pulled_at or datetime.now(UTC),
        )
    )


def _blob_gets(reg: FakeRegistry) -> list[str]:
    return [s.path.rsplit("/", 1)[1] for s in reg.requests_to(f"/v2/{REPO}/blobs/", "GET")]


def test_cold_pull_blobs_stored_by_the_clients_pull_are_not_fetched(upstream: FakeRegistry) -> None:
    digest, manifest, blobs = _image(upstream, [b"a" * 1000, b"b" * 2000])
    sink = MemorySink()
    sink.put(REPO, digest, manifest)  # the proxy stored the manifest it served

    def client_pull() -> None:  # the proxy storing what the client downloads, an upload open meanwhile
        for d, data in blobs.items():
            sink.uploads = {"u": time.time()}
            time.sleep(0.2)
            sink.put(REPO, d, data)
            sink.uploads = {}

    t = threading.Thread(target=client_pull)
    t.start()
    result = _filler(upstream, sink).fill(_event(digest))
    t.join()
    assert upstream.requests_to(f"/v2/{REPO}/manifests/") == []
    assert _blob_gets(upstream) == []
    assert {i.digest: i.outcome for i in result.items} == {d: "linked" for d in blobs}


def test_skipped_layer_fetched_once_after_the_grace(upstream: FakeRegistry) -> None:
    digest, manifest, blobs = _image(upstream, [b"base" * 500, b"app" * 100])
    config, base, app = list(blobs)
    sink = MemorySink()
    sink.put(REPO, digest, manifest)
    sink.put(REPO, config, blobs[config])
    sink.put(REPO, app, blobs[app])  # the client pulled those; it had the base
    start = time.monotonic()
    result = _filler(upstream, sink).fill(_event(digest))
    assert 0.4 < time.monotonic() - start < 3
    assert _blob_gets(upstream) == [base]
    assert upstream.requests_to(f"/v2/{REPO}/manifests/") == []
    assert {i.digest: i.outcome for i in result.items}[base] == "fetched"


def test_repair_does_not_wait_and_the_manifest_comes_from_upstream_when_the_cache_lacks_it(
    upstream: FakeRegistry,
) -> None:
    digest, _, blobs = _image(upstream, [b"x" * 300])
    sink = MemorySink()
    start = time.monotonic()
    _filler(upstream, sink, grace_s=30, idle_s=30, poll_s=1).fill(_event(digest), reason="repair")
    assert time.monotonic() - start < 5
    assert len(upstream.requests_to(f"/v2/{REPO}/manifests/", "GET")) == 1
    assert sorted(_blob_gets(upstream)) == sorted(blobs)

"""ReferrerSync's referrers-API path, which no devstack registry serves (CNCF distribution answers 404): an upstream
fake in memory and a recording sink. The tag-schema and cosign paths run against real registries in
tests/integration/test_referrers_sync.py and tests/e2e/test_supply_chain.py."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

import pytest

from layerfill.consumers.fetcher.referrers import ReferrerSync
from layerfill.oci import mediatypes as mt
from layerfill.oci.digest import digest_of
from layerfill.oci.referrers import ReferrerPolicy, tag_schema_tag
from layerfill.remote.client import Manifest
from layerfill.sinks.base import StoreResult

pytestmark = pytest.mark.unit

SUBJECT = "sha256:" + "ab" * 32


def _blob(data: bytes, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


class Upstream:
    """Serves manifests, blobs and a referrers API answer from dicts; counts requests."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.referrers: dict[str, bytes] = {}
        self.calls: list[str] = []

    def artifact(self, artifact_type: str, payload: bytes) -> dict[str, Any]:
        empty = b"{}"
        self.blobs[digest_of(empty)] = empty
        self.blobs[digest_of(payload)] = payload
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": artifact_type,
               "config": _blob(empty, mt.OCI_EMPTY), "layers": [_blob(payload, "application/octet-stream")],
               "subject": {"mediaType": mt.OCI_MANIFEST, "digest": SUBJECT, "size": 100}}  # fmt: skip
        data = json.dumps(doc).encode()
        self.manifests[digest_of(data)] = data
        return {**_blob(data, mt.OCI_MANIFEST), "artifactType": artifact_type}

    def get_referrers(self, repository: str, digest: str) -> Manifest | None:
        self.calls.append("GET referrers")
        data = self.referrers.get(digest)
        return None if data is None else Manifest(data, mt.OCI_INDEX, digest_of(data))

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        self.calls.append(f"GET {reference}")
        return Manifest(self.manifests[reference], mt.OCI_MANIFEST, reference)

    def head_manifest(self, repository: str, reference: str) -> None:
        self.calls.append(f"HEAD {reference}")
        return None

    @contextmanager
    def open_blob(self, repository: str, digest: str):
        self.calls.append(f"GET blob {digest}")
        data = self.blobs[digest]

        class Stream(list):
            size = len(data)

        yield Stream([data])


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stores_tags = name == "distribution"  # as the real sinks of that name
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, str] = {}

    def store_blob(self, repository, blob, source) -> StoreResult:
        with source() as chunks:
            self.blobs[blob.digest] = b"".join(chunks)
        return StoreResult("fetched", blob.size)

    def store_manifest(self, repository, digest, media_type, data) -> StoreResult:
        assert digest_of(data) == digest
        self.manifests[digest] = data
        return StoreResult("fetched", len(data))

    def store_tag(self, repository, tag, digest) -> StoreResult:
        assert digest in self.manifests, "a tag must only name a stored manifest"
        self.tags[tag] = digest
        return StoreResult("linked", 0)


def _upstream_with_api() -> tuple[Upstream, dict, dict, dict]:
    up = Upstream()
    sbom = up.artifact("application/spdx+json", b'{"spdxVersion": "SPDX-2.3"}')
    sig = up.artifact("application/vnd.dev.sigstore.bundle.v0.3+json", b"signature bundle")
    junk = up.artifact("application/vnd.example.thing", b"something else")
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [sbom, sig, junk]}
    up.referrers[SUBJECT] = json.dumps(index).encode()
    return up, sbom, sig, junk


def test_api_answers_are_copied_and_a_tag_schema_index_is_written_for_a_cache_without_the_api() -> None:
    up, sbom, sig, junk = _upstream_with_api()
    sink = Recorder("distribution")
    result = ReferrerSync(up, sink, "team/app", "team/app", ReferrerPolicy(max_depth=1)).run([SUBJECT])  # type: ignore[arg-type]
    assert result.error is None
    assert (result.counts.signatures, result.counts.sboms, result.counts.other, result.counts.skipped) == (1, 1, 0, 1)
    assert result.memory.referrers_api is True
    assert f"GET {junk['digest']}" not in up.calls  # its artifactType says "other": not followed, not fetched
    index_digest = sink.tags[tag_schema_tag(SUBJECT)]
    listed = [m["digest"] for m in json.loads(sink.manifests[index_digest])["manifests"]]
    assert listed == [sbom["digest"], sig["digest"]]  # only what the cache holds
    assert {sbom["digest"], sig["digest"]} <= set(sink.manifests)
    assert f"HEAD {tag_schema_tag(SUBJECT)}" not in up.calls  # the API answered: no tag-schema lookup


def test_a_registry_sink_gets_the_artifacts_by_digest_and_no_invented_tag() -> None:
    up, sbom, sig, _ = _upstream_with_api()
    sink = Recorder("registry")
    result = ReferrerSync(up, sink, "team/app", "team/app", ReferrerPolicy(max_depth=1)).run([SUBJECT])  # type: ignore[arg-type]
    assert result.error is None and result.counts.total == 2
    assert sink.tags == {}
    assert {sbom["digest"], sig["digest"]} <= set(sink.manifests)


def test_a_recheck_fetches_only_artifacts_it_has_not_stored() -> None:
    up, *_ = _upstream_with_api()
    sink = Recorder("distribution")
    policy = ReferrerPolicy(max_depth=1)
    first = ReferrerSync(up, sink, "team/app", "team/app", policy).run([SUBJECT])  # type: ignore[arg-type]
    index = json.loads(up.referrers[SUBJECT])
    index["manifests"].append(up.artifact("application/vnd.cyclonedx+json", b"{}{}"))
    up.referrers[SUBJECT] = json.dumps(index).encode()
    up.calls.clear()
    again = ReferrerSync(up, sink, "team/app", "team/app", policy, first.memory).run([SUBJECT])  # type: ignore[arg-type]
    assert again.counts.sboms == 2 and again.counts.signatures == 1
    manifest_gets = [c for c in up.calls if c.startswith("GET sha256:")]
    assert manifest_gets == [f"GET {index['manifests'][-1]['digest']}"]


def test_a_failure_is_reported_not_raised() -> None:
    up, *_ = _upstream_with_api()
    up.blobs.clear()  # every blob fetch fails
    result = ReferrerSync(up, Recorder("distribution"), "team/app", "team/app", ReferrerPolicy()).run([SUBJECT])  # type: ignore[arg-type]
    assert result.error is not None and result.counts.total == 0

"""The cache audit behind `layerfill verify`, against an in-memory storage with distribution's semantics."""

from __future__ import annotations

import hashlib
import json

import pytest

from layerfill.config.routes import Route
from layerfill.config.settings import Settings
from layerfill.oci import mediatypes as mt
from layerfill.oci.walk import WalkRules
from layerfill.ops.audit import AuditStatus, audit_manifest
from layerfill.ops.enumerate import StoredManifest, format_position, list_repositories, parse_position, stored_manifests
from layerfill.sinks.base import Presence, SinkIntegrityError
from layerfill.sinks.distribution import BlobNotFound

pytestmark = pytest.mark.unit

REPO = "team/app"


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


class FakeStorage:
    """Blob data by digest, plus per-repository layer links, manifest links and tags."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.layer_links: set[tuple[str, str]] = set()
        self.manifest_links: set[tuple[str, str]] = set()
        self.tags: dict[str, dict[str, str]] = {}
        self.corrupt: set[str] = set()

    def put_blob(self, repo: str, data: bytes, *, link: bool = True) -> str:
        d = sha(data)
        self.data[d] = data
        if link:
            self.layer_links.add((repo, d))
        return d

    def put_manifest(self, repo: str, doc: dict, *, link: bool = True, tag: str | None = None) -> tuple[str, bytes]:
        data = json.dumps(doc).encode()
        d = sha(data)
        self.data[d] = data
        if link:
            self.manifest_links.add((repo, d))
        if tag:
            self.tags.setdefault(repo, {})[tag] = d
        return d, data

    # -- AuditStorage / CatalogStorage --
    def read_blob_bytes(self, digest: str) -> bytes:
        if digest not in self.data:
            raise BlobNotFound(digest)
        if digest in self.corrupt:
            raise SinkIntegrityError(f"stored blob {digest} hashes to something else")
        return self.data[digest]

    def blob_size(self, digest: str) -> int | None:
        return len(self.data[digest]) if digest in self.data else None

    def _presence(self, links: set[tuple[str, str]], repo: str, digest: str) -> Presence:
        if digest not in self.data:
            return Presence.ABSENT
        return Presence.LINKED if (repo, digest) in links else Presence.DATA_ONLY

    def blob_presence(self, repository: str, digest: str) -> Presence:
        return self._presence(self.layer_links, repository, digest)

    def manifest_presence(self, repository: str, digest: str) -> Presence:
        return self._presence(self.manifest_links, repository, digest)

    def list_repositories(self) -> list[str]:
        return sorted({r for r, _ in self.manifest_links} | {r for r, _ in self.layer_links})

    def list_manifest_revisions(self, repository: str) -> list[str]:
        return sorted(d for r, d in self.manifest_links if r == repository)

    def list_tags(self, repository: str) -> dict[str, str]:
        return dict(self.tags.get(repository, {}))


def desc(media_type: str, digest: str, size: int, **extra: object) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def image(store: FakeStorage, repo: str, layers: list[bytes], *, link: list[bool] | None = None,
          tag: str | None = None, manifest_link: bool = True) -> tuple[str, bytes, list[str]]:  # fmt: skip
    """An image whose config is linked; `link[i]` False leaves layer i's data unlinked, absent data is
    made by deleting it afterwards."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": len(layers)}).encode()
    cfg = store.put_blob(repo, config)
    digests = [store.put_blob(repo, b, link=(link or [True] * len(layers))[i]) for i, b in enumerate(layers)]
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_CONFIG, cfg, len(config)),
        "layers": [desc(mt.OCI_LAYER_GZIP, d, len(b)) for d, b in zip(digests, layers, strict=True)],
    }
    d, data = store.put_manifest(repo, doc, link=manifest_link, tag=tag)
    return d, data, digests


def test_complete_image() -> None:
    s = FakeStorage()
    d, data, _ = image(s, REPO, [b"base", b"app"])
    a = audit_manifest(s, REPO, d, tags=["1"])
    assert a.status is AuditStatus.COMPLETE
    assert a.missing == []
    assert a.checked == 4  # manifest, config, two layers
    assert a.total_bytes == len(data) + sum(len(x) for x in (b"base", b"app")) + s.blob_size(
        json.loads(data)["config"]["digest"]
    )
    assert a.media_type == mt.OCI_MANIFEST


def test_absent_and_unlinked_layers_are_named() -> None:
    s = FakeStorage()
    d, _, (base, mid, top) = image(s, REPO, [b"base", b"mid", b"top"], link=[False, True, True])
    del s.data[top]  # the client skipped it and it was never cached anywhere
    a = audit_manifest(s, REPO, d)
    assert a.status is AuditStatus.PARTIAL
    assert [(m.digest, m.kind, m.reason, m.manifest_digest) for m in a.missing] == [
        (base, "layer", "not_linked", d),
        (top, "layer", "absent", d),
    ]
    assert mid not in {m.digest for m in a.missing}


def test_wrong_size_and_deep_hash() -> None:
    s = FakeStorage()
    d, _, (layer,) = image(s, REPO, [b"layer"])
    assert audit_manifest(s, REPO, d, hasher=lambda digest: digest).status is AuditStatus.COMPLETE
    bad = audit_manifest(s, REPO, d, hasher=lambda digest: "sha256:" + "0" * 64 if digest == layer else digest)
    assert [(m.digest, m.reason) for m in bad.missing] == [(layer, "wrong_digest")]
    s.data[layer] = b"layer-but-longer"
    assert [(m.digest, m.reason) for m in audit_manifest(s, REPO, d).missing] == [(layer, "wrong_size")]


def test_unknown_when_manifest_bytes_are_absent_or_bad() -> None:
    s = FakeStorage()
    missing = "sha256:" + "a" * 64
    a = audit_manifest(s, REPO, missing)
    assert a.status is AuditStatus.UNKNOWN
    assert "not in storage" in (a.detail or "")
    d, _, _ = image(s, REPO, [b"x"])
    s.corrupt.add(d)
    assert audit_manifest(s, REPO, d).status is AuditStatus.UNKNOWN
    not_json = s.put_blob(REPO, b"not a manifest")
    u = audit_manifest(s, REPO, not_json)
    assert u.status is AuditStatus.UNKNOWN
    assert "cannot be planned" in (u.detail or "")


def test_index_with_missing_child_and_child_blobs() -> None:
    s = FakeStorage()
    amd, amd_bytes, _ = image(s, REPO, [b"amd-layer"])
    arm, arm_bytes, (arm_layer,) = image(s, REPO, [b"arm-layer"], link=[False])
    # A third platform the client never pulled: not in storage at all.
    gone = b'{"schemaVersion": 2}'
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, amd, len(amd_bytes), platform={"os": "linux", "architecture": "amd64"}),
            desc(mt.OCI_MANIFEST, arm, len(arm_bytes), platform={"os": "linux", "architecture": "arm64"}),
            desc(mt.OCI_MANIFEST, sha(gone), len(gone), platform={"os": "linux", "architecture": "s390x"}),
        ],
    }
    s.manifest_links.discard((REPO, arm))  # arm's manifest data exists but is not linked here
    idx, _ = s.put_manifest(REPO, index, tag="multi")
    a = audit_manifest(s, REPO, idx)
    assert a.status is AuditStatus.PARTIAL
    assert {(m.digest, m.kind, m.reason) for m in a.missing} == {
        (arm, "manifest", "not_linked"),
        (sha(gone), "manifest", "absent"),
        (arm_layer, "layer", "not_linked"),
    }
    assert a.checked == 1 + 3 + 3  # index, three children, the shared config, two layers


def test_a_route_limited_to_one_platform_is_judged_by_its_platforms() -> None:
    """The fetcher fills only linux/amd64 of an index on such a route: the audit, walked by the same rules,
    calls that complete; walked by every platform, the arm64 child the fetcher never fetched is missing."""
    s = FakeStorage()
    amd, amd_bytes, _ = image(s, REPO, [b"amd-layer"])
    arm = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, amd, len(amd_bytes), platform={"os": "linux", "architecture": "amd64"}),
            desc(mt.OCI_MANIFEST, sha(arm), len(arm), platform={"os": "linux", "architecture": "arm64"}),
        ],
    }
    idx, _ = s.put_manifest(REPO, index)
    every = audit_manifest(s, REPO, idx)
    assert (every.status, [m.digest for m in every.missing]) == (AuditStatus.PARTIAL, [sha(arm)])
    route = Route(registry="cache:5000", upstream_url="http://up:5000", platforms=["linux/amd64"])
    limited = audit_manifest(s, REPO, idx, rules=Settings(routes=[route]).walk_rules(route))
    assert (limited.status, limited.missing) == (AuditStatus.COMPLETE, [])
    assert limited.checked == 1 + 1 + 2  # the index, the amd64 child, its config and layer


def test_the_walk_limits_are_the_routes() -> None:
    s = FakeStorage()
    d, _, _ = image(s, REPO, [b"1", b"2", b"3"])
    assert audit_manifest(s, REPO, d, rules=WalkRules(max_entries=3)).status is AuditStatus.COMPLETE
    too_many = audit_manifest(s, REPO, d, rules=WalkRules(max_entries=2))
    assert too_many.status is AuditStatus.UNKNOWN
    assert "cannot be planned" in (too_many.detail or "")


def test_enumeration_prefix_tags_and_resume() -> None:
    s = FakeStorage()
    a1, _, _ = image(s, "p/a", [b"1"], tag="v1")
    b1, _, _ = image(s, "p/b", [b"2"])
    image(s, "q/c", [b"3"])
    repos = list_repositories(s, "p/")
    assert repos == ["p/a", "p/b"]
    items = list(stored_manifests(s, repos))
    assert items == [StoredManifest("p/a", a1, ("v1",)), StoredManifest("p/b", b1, ())]
    resumed = list(stored_manifests(s, repos, after=items[0].position))
    assert resumed == items[1:]
    assert list(stored_manifests(s, repos, after=items[1].position)) == []
    assert parse_position(format_position(items[1].position)) == items[1].position
    with pytest.raises(ValueError, match="checkpoint"):
        parse_position("no-digest-here")


def test_resume_orders_nested_repositories_consistently() -> None:
    """'a' sorts before 'a/b' as a repository, though 'a/b@' < 'a@' as strings: positions compare as tuples."""
    s = FakeStorage()
    image(s, "a", [b"1"])
    image(s, "a/b", [b"2"])
    items = list(stored_manifests(s, ["a/b", "a"]))
    assert [i.repository for i in items] == ["a", "a/b"]
    assert [i.repository for i in stored_manifests(s, ["a", "a/b"], after=items[0].position)] == ["a/b"]

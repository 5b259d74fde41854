"""The one manifest walk (layerfill/oci/walk.py) and the route's rules it walks by (Settings.walk_rules)."""

from __future__ import annotations

import hashlib
import json

import pytest

from layerfill.config.routes import Route
from layerfill.config.settings import Settings
from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import ImageIndex, ImageManifest, ManifestTooLarge
from layerfill.oci.plan import PlanError
from layerfill.oci.walk import ManifestWalk, WalkRules

pytestmark = pytest.mark.unit


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def blob(n: int) -> dict:
    data = f"blob-{n}".encode()
    return {"mediaType": mt.OCI_LAYER_GZIP, "digest": sha(data), "size": len(data)}


def image(*layers: int) -> bytes:
    config = {"mediaType": mt.OCI_CONFIG, "digest": sha(b"config"), "size": 6}
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": [blob(n) for n in layers]}
    ).encode()


def index(*children: tuple[bytes, str]) -> bytes:
    entries = [
        {"mediaType": json.loads(data)["mediaType"], "digest": sha(data), "size": len(data),
         "platform": dict(zip(("os", "architecture"), platform.split("/"), strict=True))}
        for data, platform in children
    ]  # fmt: skip
    return json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}).encode()


AMD, ARM = image(1, 2), image(2, 3)
MULTI = index((AMD, "linux/amd64"), (ARM, "linux/arm64"))


def walk_all(rules: WalkRules | None) -> ManifestWalk:
    """Visit the root, then every child the walk returns (what the fetcher and the audit do, less the I/O)."""
    stored = {sha(d): d for d in (AMD, ARM, MULTI)}
    walk = ManifestWalk(sha(MULTI), len(MULTI), rules)
    pending = [sha(MULTI)]
    while pending:
        digest = pending.pop(0)
        pending += [c.digest for c in walk.visit(digest, stored[digest]).children]
    return walk


def test_every_platform_by_default_each_blob_once() -> None:
    walk = walk_all(None)
    assert [m.digest for m in walk.plan.manifests] == [sha(MULTI), sha(AMD), sha(ARM)]
    assert [b.digest for b in walk.plan.blobs] == [sha(b"config"), blob(1)["digest"], blob(2)["digest"],
                                                   blob(3)["digest"]]  # fmt: skip


def test_the_routes_platforms_decide_the_children() -> None:
    route = Route(registry="cache:5000", upstream_url="http://up:5000", platforms=["linux/amd64"])
    walk = walk_all(Settings(routes=[route]).walk_rules(route))
    assert [m.digest for m in walk.plan.manifests] == [sha(MULTI), sha(AMD)]
    assert [s.digest for s in walk.plan.skipped] == [sha(ARM)]
    assert walk.plan.complete


def test_visit_says_what_is_new() -> None:
    walk = ManifestWalk(sha(MULTI), len(MULTI))
    root = walk.visit(sha(MULTI), MULTI)
    assert isinstance(root.document, ImageIndex)
    assert ([c.digest for c in root.children], root.blobs) == ([sha(AMD), sha(ARM)], ())
    amd = walk.visit(sha(AMD), AMD, mt.OCI_MANIFEST)
    assert isinstance(amd.document, ImageManifest)
    assert [b.digest for b in amd.blobs] == [sha(b"config"), blob(1)["digest"], blob(2)["digest"]]
    arm = walk.visit(sha(ARM), ARM)
    assert [b.digest for b in arm.blobs] == [blob(3)["digest"]]  # the config and the shared layer came with amd64
    with pytest.raises(PlanError):
        walk.visit(sha(ARM), ARM)  # visited twice


def test_limits() -> None:
    with pytest.raises(ManifestTooLarge):
        ManifestWalk(sha(AMD), len(AMD), WalkRules(max_entries=1)).visit(sha(AMD), AMD)
    nested = index((MULTI, "linux/amd64"))
    walk = ManifestWalk(sha(nested), len(nested), WalkRules(max_index_depth=1))
    (child,) = walk.visit(sha(nested), nested).children
    with pytest.raises(PlanError, match="nested"):
        walk.visit(child.digest, MULTI)


def test_rules_follow_the_settings() -> None:
    amd64 = Route(
        registry="cache:5000", upstream_url="http://up:5000", repository_prefix="a", platforms=["linux/amd64"]
    )
    every = Route(registry="cache:5000", upstream_url="http://up:5000", repository_prefix="b")
    other = Route(registry="other:5000", upstream_url="http://up:5000", repository_prefix="a")
    settings = Settings(routes=[amd64, every, other], fetcher={"max_layers": 7})
    assert settings.walk_rules(amd64) == WalkRules.parse(["linux/amd64"], max_entries=7)
    assert settings.walk_rules(None) == WalkRules(max_entries=7)
    assert settings.route_for("cache:5000", "a/x") == amd64
    assert settings.route_for("cache:5000", "c/x") is None
    # Without the registry: one route decides, two that disagree leave every platform in (the strict audit).
    assert settings.route_for(None, "b/x") == every
    assert settings.route_for(None, "a/x") is None
    assert Settings(routes=[amd64]).route_for(None, "a/x") == amd64

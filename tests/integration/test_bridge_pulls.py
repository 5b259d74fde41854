"""Acceptance (issue 3): skopeo pulls through the devstack proxy cache become exactly one ManifestPulled per
manifest pulled, read back from Kafka and decoded with registry, repository, reference and digest right.

Recorded with distribution v3.1.1 as the proxy: every manifest request (GET or HEAD, by tag or by digest) yields
exactly one `pull` event in its own envelope, with its own registry request id; blob GETs yield `pull` events
with mediaType application/octet-stream (ignored by the bridge). skopeo only GETs manifests, so one skopeo pull
of an image is one event; a docker/containerd pull that HEADs the tag and then GETs the digest is two registry
requests and two events (see the last test). Runs the bridge on the shared port: run under
`flock /tmp/layerfill-e2e.lock`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from tests.support.clients import layout_manifest_digests, skopeo_pull
from tests.support.manifest_events import manifest_request, pulled_after_barrier, pulls
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration

SMALL = 8 * 1024 * 1024
BARRIER = "demo/app-b"


@pytest.fixture
def bridge(devstack: DevStack, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(devstack, tmp_path / "pipeline")
    try:
        p.start("bridge")
        yield p
    finally:
        p.close()


def _seed(devstack: DevStack, image: str) -> tuple[str, str]:
    """Push `image` and the barrier image under a fresh prefix; return (prefix, the image's digest)."""
    prefix = unique("br")
    pushed = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=[image, f"{BARRIER}:1"])
    return prefix, pushed[f"{prefix}/{image}"]


def test_pull_by_tag_is_one_event(devstack: DevStack, catalog, bridge: Pipeline, tmp_path: Path) -> None:
    prefix, digest = _seed(devstack, "demo/app-a:1")
    repo = f"{prefix}/demo/app-a"
    res = skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "client")
    assert res.returncode == 0, res.stderr

    events = pulled_after_barrier(bridge, prefix, f"{prefix}/{BARRIER}")
    assert pulls(events) == {(devstack.proxy_registry, repo, "1", digest): 1}
    (ev,) = events
    assert ev["source"] == "distribution"
    assert ev["media_type"] == catalog.images["demo/app-a:1"].media_type
    assert ev["manifest"] is None


def test_pull_by_digest_is_one_event_without_reference(devstack: DevStack, bridge: Pipeline, tmp_path: Path) -> None:
    prefix, digest = _seed(devstack, "demo/app-a:1")
    repo = f"{prefix}/demo/app-a"
    res = skopeo_pull(devstack.proxy_registry, repo, digest, tmp_path / "client", tag="bydigest")
    assert res.returncode == 0, res.stderr

    events = pulled_after_barrier(bridge, prefix, f"{prefix}/{BARRIER}")
    assert pulls(events) == {(devstack.proxy_registry, repo, None, digest): 1}


def test_pull_of_an_index_with_all_platforms(devstack: DevStack, catalog, bridge: Pipeline, tmp_path: Path) -> None:
    prefix, index = _seed(devstack, "demo/multi:1")
    repo = f"{prefix}/demo/multi"
    info = catalog.images["demo/multi:1"]
    children = [m.digest for m in info.manifests]
    assert len(children) == 2
    res = skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "client", all_platforms=True)
    assert res.returncode == 0, res.stderr

    events = pulled_after_barrier(bridge, prefix, f"{prefix}/{BARRIER}")
    reg = devstack.proxy_registry
    # The index by tag, then each child manifest by digest: three manifests pulled, three events.
    assert pulls(events) == {(reg, repo, "1", index): 1, **{(reg, repo, None, c): 1 for c in children}}
    by_digest = {e["digest"]: e for e in events}
    assert by_digest[index]["media_type"] == info.media_type
    assert {by_digest[c]["media_type"] for c in children} == {m.media_type for m in info.manifests}
    assert len({e["event_id"] for e in events}) == 3


def test_pull_of_one_platform_of_an_index(devstack: DevStack, catalog, bridge: Pipeline, tmp_path: Path) -> None:
    prefix, index = _seed(devstack, "demo/multi:1")
    repo = f"{prefix}/demo/multi"
    arm64 = next(m.digest for m in catalog.images["demo/multi:1"].manifests if "arm64" in m.platform)
    res = skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "client", arch="arm64")
    assert res.returncode == 0, res.stderr
    assert layout_manifest_digests(tmp_path / "client") == [arm64]

    events = pulled_after_barrier(bridge, prefix, f"{prefix}/{BARRIER}")
    reg = devstack.proxy_registry
    # The index and the one child the client chose; the other platform was not pulled, so no event for it.
    assert pulls(events) == {(reg, repo, "1", index): 1, (reg, repo, None, arm64): 1}


def test_head_then_get_are_two_registry_requests_and_two_events(devstack: DevStack, bridge: Pipeline) -> None:
    """A docker/containerd-style pull: HEAD the tag to resolve it, then GET the manifest by digest. The
    registry emits one event per request (distinct notification and request ids), and the bridge publishes
    both: they are two pulls as far as the registry can tell, and only the HEAD carries the tag. Collapsing
    them would need state across requests and would drop that tag; the fetcher is idempotent per digest."""
    prefix, digest = _seed(devstack, "demo/app-a:1")
    repo = f"{prefix}/demo/app-a"
    head = manifest_request(devstack.proxy_registry, repo, "1", method="HEAD")
    assert head.headers["Docker-Content-Digest"] == digest
    manifest_request(devstack.proxy_registry, repo, digest)

    events = pulled_after_barrier(bridge, prefix, f"{prefix}/{BARRIER}")
    reg = devstack.proxy_registry
    assert pulls(events) == {(reg, repo, "1", digest): 1, (reg, repo, None, digest): 1}
    assert len({e["event_id"] for e in events}) == 2

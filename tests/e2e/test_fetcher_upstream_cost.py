"""Upstream cost (issue 14), counted where it is paid: the upstream registry's own access log, by User-Agent
(tests/support/upstream_log.py). Real clients pull through the real proxy; bridge and fetchers run as processes.

- a cold pull by a client with nothing: layerfill adds <= 5% of the image's blob bytes and no manifest GET;
- a layer the client skipped (it had it) and the cache never saw: layerfill fetches exactly that layer, once;
- one missing base shared by two images handled by two fetcher processes at once: fetched once;
- a client that abandons its pull half-way: the rest is fetched once the pull went quiet;
- an index pulled for one platform: no GET of a manifest the cache holds, one per child nobody pulled."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from bench.common import OCI_MANIFEST
from tests.support.cachestore import CacheStorage
from tests.support.clients import skopeo_pull
from tests.support.routes import route
from tests.support.stack import DevStack, unique
from tests.support.upstream_images import Image, Layer, gzip_layer, push_image, push_index
from tests.support.upstream_log import UpstreamLog, blob_bytes, blob_gets, manifest_gets

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
LAYER = 8 * MiB
# Short bounds keep the tests quick; the defaults are in layerfill/config/routes.py (UpstreamCost).
FAST = {"grace_s": 1.0, "idle_s": 1.0, "upload_stale_s": 5.0, "max_wait_s": 60.0}


def _route(devstack: DevStack, prefix: str, **cost: float) -> dict:
    return {**route(devstack, prefix), "upstream_cost": {**FAST, **cost}}


def _log(devstack: DevStack) -> UpstreamLog:
    return UpstreamLog(devstack.ctx.paths.logs / "upstream.log").mark()


def _layers(n: int, size: int = LAYER) -> list[Layer]:
    return [gzip_layer(size) for _ in range(n)]


def _wait_cached(p, *digests: str, timeout: float = 120) -> list[dict]:
    want = set(digests)
    return p.read(p.topics.image_cached.name, until=lambda rs: want <= {r["digest"] for r in rs}, timeout=timeout)


def _metric(p, name: str, process: str = "fetcher", **labels: str) -> float:
    """The sum of `name` samples matching `labels` on a fetcher's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{p.health_ports[process]}/metrics", timeout=10).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _assert_complete(devstack: DevStack, img: Image) -> None:
    storage = CacheStorage(devstack.settings().s3)
    for digest, size in img.layers:
        assert storage.size(digest) == size
        assert storage.layer_link(img.repository, digest) == digest
    assert storage.layer_link(img.repository, img.config) == img.config


def test_cold_pull_costs_the_upstream_the_image_once(devstack: DevStack, pipeline_factory, tmp_path: Path) -> None:
    prefix = unique("cold")
    img = push_image(devstack.upstream_registry, f"{prefix}/app", _layers(3))
    p = pipeline_factory(routes=[_route(devstack, prefix)])
    p.start("bridge")
    p.start("fetcher")
    log = _log(devstack)

    res = skopeo_pull(devstack.proxy_registry, img.repository, "1", tmp_path / "client")
    assert res.returncode == 0, res.stderr
    _wait_cached(p, img.digest)

    reqs = log.requests(prefix)
    image = img.layer_bytes
    assert blob_bytes(reqs, "proxy") >= image  # the client's pull went through the proxy to the upstream
    assert blob_bytes(reqs, "layerfill") <= 0.05 * image, [r for r in reqs if r.who == "layerfill"]
    assert manifest_gets(reqs, "layerfill") == []  # the pulled manifest was read from the cache
    _assert_complete(devstack, img)
    # Each blob was either stored by the proxy before the fetcher looked, or waited for and delivered by it.
    assert _metric(p, "layerfill_fetcher_blobs_deferred_total", outcome="fetched_after_wait") == 0


def test_skipped_layer_is_fetched_exactly_once(devstack: DevStack, pipeline_factory, tmp_path: Path) -> None:
    prefix = unique("skip")
    base, app_a, app_b = _layers(1)[0], *_layers(2, MiB)
    a = push_image(devstack.upstream_registry, f"{prefix}/a", [base, app_a])
    b = push_image(devstack.upstream_registry, f"{prefix}/b", [app_b], mounted=[(base, a.repository)])
    base_digest, base_size = base.digest, base.size
    p = pipeline_factory(routes=[_route(devstack, prefix)])
    p.start("bridge")
    p.start("fetcher")
    layout = tmp_path / "client"
    # The client has the base from elsewhere (straight from the upstream): the cache never sees it.
    assert skopeo_pull(devstack.upstream_registry, a.repository, "1", layout, tag="a").returncode == 0
    log = _log(devstack)

    res = skopeo_pull(devstack.proxy_registry, b.repository, "1", layout, tag="b")
    assert res.returncode == 0, res.stderr
    _wait_cached(p, b.digest)

    reqs = log.requests(prefix)
    assert blob_gets(reqs, "proxy", base_digest) == []  # skipped by the client
    (got,) = blob_gets(reqs, "layerfill", base_digest)
    assert got.bytes == base_size
    assert [r.reference for r in blob_gets(reqs, "layerfill")] == [base_digest]  # nothing else, not the config
    assert manifest_gets(reqs, "layerfill") == []
    assert _metric(p, "layerfill_upstream_requests_total", kind="blob", reason="fill", method="GET", code="200") == 1
    assert _metric(p, "layerfill_upstream_response_bytes_total", kind="blob", reason="fill") == base_size
    assert _metric(p, "layerfill_fetcher_blobs_deferred_total", outcome="fetched_after_wait") == 1
    _assert_complete(devstack, b)


def test_shared_missing_base_is_fetched_once_by_two_fetcher_processes(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("shared")
    base = _layers(1)[0]
    x = push_image(devstack.upstream_registry, f"{prefix}/x", [base, *_layers(1, MiB)])
    y = push_image(devstack.upstream_registry, f"{prefix}/y", _layers(1, MiB), mounted=[(base, x.repository)])
    base_digest = base.digest
    # Two processes, each with its own topics (so each surely gets one of the images), one state DB: the group.
    p1 = pipeline_factory(routes=[_route(devstack, prefix, grace_s=0.5)])
    p2 = pipeline_factory(routes=[_route(devstack, prefix, grace_s=0.5)])
    p2.state_url = p1.state_url
    p1.start("fetcher", name="fetcher-1")
    p2.start("fetcher", name="fetcher-2")
    log = _log(devstack)

    p1.publish(registry=devstack.proxy_registry, repository=x.repository, digest=x.digest, reference="1")
    p2.publish(registry=devstack.proxy_registry, repository=y.repository, digest=y.digest, reference="1")
    _wait_cached(p1, x.digest)
    _wait_cached(p2, y.digest)

    reqs = log.requests(prefix)
    assert len(blob_gets(reqs, "layerfill", base_digest)) == 1
    outcomes = sorted(
        r["outcome"] for p in (p1, p2) for r in p.read(p.topics.layer_cached.name) if r["digest"] == base_digest
    )
    assert outcomes == ["fetched", "linked"]
    _assert_complete(devstack, x)
    _assert_complete(devstack, y)


def test_abandoned_pull_is_completed_after_the_bound(devstack: DevStack, pipeline_factory) -> None:
    prefix = unique("quit")
    img = push_image(devstack.upstream_registry, f"{prefix}/app", _layers(2, 16 * MiB))
    p = pipeline_factory(routes=[_route(devstack, prefix)])
    p.start("bridge")
    p.start("fetcher")
    log = _log(devstack)

    # A client that reads the manifest, starts on the first layer, and goes away after a quarter of it.
    base = f"http://{devstack.proxy_registry}/v2/{img.repository}"
    with requests.Session() as http:
        r = http.get(f"{base}/manifests/1", headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 200
        first = img.layers[0][0]
        with http.get(f"{base}/blobs/{first}", stream=True, timeout=30) as blob:
            assert blob.status_code == 200
            blob.raw.read(4 * MiB)
    _wait_cached(p, img.digest, timeout=180)

    reqs = log.requests(prefix)
    for digest in [img.config, *(d for d, _ in img.layers)]:
        assert len(blob_gets(reqs, "layerfill", digest)) <= 1, digest  # never twice
    second = img.layers[1][0]
    assert len(blob_gets(reqs, "layerfill", second)) == 1  # nobody else was getting it
    assert blob_gets(reqs, "proxy", second) == []
    _assert_complete(devstack, img)


def test_index_children_only_unpulled_ones_are_asked_for(devstack: DevStack, pipeline_factory, tmp_path: Path) -> None:
    prefix = unique("idx")
    index = push_index(devstack.upstream_registry, f"{prefix}/multi", ["amd64", "arm64"])
    amd64, arm64 = index.children["amd64"], index.children["arm64"]
    p = pipeline_factory(routes=[_route(devstack, prefix)])
    p.start("bridge")
    p.start("fetcher")
    log = _log(devstack)

    res = skopeo_pull(devstack.proxy_registry, index.repository, "1", tmp_path / "client", arch="amd64")
    assert res.returncode == 0, res.stderr
    _wait_cached(p, index.digest)

    reqs = log.requests(prefix)
    # The index and the amd64 child were pulled through the proxy, which stored them: layerfill read those from
    # the cache, and asked the upstream once for the child nobody pulled.
    assert [r.reference for r in manifest_gets(reqs, "layerfill")] == [arm64.digest]
    # What the client pulled, the proxy delivered; the other platform's blobs were fetched once each.
    assert sorted(r.reference for r in blob_gets(reqs, "layerfill")) == sorted(arm64.blobs)
    assert not set(amd64.blobs) & {r.reference for r in blob_gets(reqs, "layerfill")}
    _assert_complete(devstack, arm64)

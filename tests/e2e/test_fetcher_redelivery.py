"""Redelivery: an event consumed again (published twice, or left uncommitted by a fetcher killed mid-download)
ends with one complete image, nothing partial at any final key, and exactly one committed ImageCached."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from layerfill.devstack.seed import build, seed
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import FaultProxy, Slow, is_referrer_lookup
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
SMALL = 8 * MiB
LARGE = 512 * MiB


def _committed(p: Pipeline, topic: str) -> int:
    """Records of `topic` the fetcher's group has committed (the topic is the test's own, so offsets count)."""
    c = Consumer({"bootstrap.servers": p.settings.kafka.bootstrap_servers, "group.id": f"{p.id}-fetcher"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(max(tp.offset, 0) for tp in c.committed([TopicPartition(topic, i) for i in parts], timeout=10))
    finally:
        c.close()


def _wait_committed(p: Pipeline, topic: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (got := _committed(p, topic)) < n:
        assert time.monotonic() < deadline, f"fetcher committed {got} of {n} records on {topic}\n{p.log('fetcher')}"
        time.sleep(0.5)


def _image_cached(p: Pipeline, digest: str) -> list[dict]:
    return [r for r in p.read(p.topics.image_cached.name) if r["digest"] == digest]


@pytest.mark.parametrize("sink", ["distribution", "registry"])
def test_same_event_twice_gives_one_image_cached_and_no_refetch(
    devstack: DevStack, pipeline_factory, tmp_path: Path, sink: str
) -> None:
    prefix = unique("dup")
    repository = f"{prefix}/demo/app-a"
    digest = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=["demo/app-a:1"])[f"{repository}:1"]
    event = {"registry": devstack.proxy_registry, "repository": repository, "digest": digest, "reference": "1",
             "event_id": str(uuid.uuid4())}  # fmt: skip
    storage = CacheStorage(devstack.settings().s3)
    if storage.size(digest) is not None:
        storage.forget(digest)  # left by an earlier run: the fill would read the manifest from the cache
    with FaultProxy(f"http://{devstack.upstream_registry}") as upstream:  # pass-through: it only counts
        p = pipeline_factory(routes=[route(devstack, prefix, sink, upstream_url=upstream.url)])
        p.start("fetcher")
        in_topic = p.topics.manifest_pulled.name

        # Twice back to back (most likely one batch), then again once the image is known complete.
        p.publish(**event)
        p.publish(**event)
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == digest for r in rs), timeout=120)
        _wait_committed(p, in_topic, 2)
        upstream_requests = upstream.count()
        if sink == "distribution":
            assert upstream.count(f"/manifests/{digest}") >= 1  # the first fill really asked the upstream
        else:
            # Warm-through: the proxy served the manifest and every blob; what reached the upstream is the
            # discovery of the image's signatures and SBOMs, which only the upstream can answer.
            fetched = [f"{r.method} {r.path}" for r in upstream.requests() if not is_referrer_lookup(r)]
            assert fetched == []
            assert upstream_requests > 0  # discovery did run (and is counted below: never again for this image)
        p.publish(**event)
        _wait_committed(p, in_topic, 3)
        # A new process has no memory of it: only the state database says the image is complete.
        p.stop("fetcher")
        p.start("fetcher")
        p.publish(**event)
        _wait_committed(p, in_topic, 4)

        assert len(_image_cached(p, digest)) == 1
        layers = [r for r in p.read(p.topics.layer_cached.name) if r["caused_by"] == event["event_id"]]
        assert len(layers) == len({r["digest"] for r in layers}) == 3  # config, 2 layers; each once
        assert upstream.count() == upstream_requests, "a redelivered event reached the upstream"
        assert p.read(p.topics.retry.name, raw=True) == []
        assert p.read(p.topics.dlq.name, raw=True) == []


def test_fetcher_killed_mid_download_then_restarted_completes_once(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("kill")
    repository = f"{prefix}/demo/large"
    seed(devstack.ctx, large_size=LARGE, prefix=prefix, names=["demo/large:1"])
    info = build(devstack.ctx, LARGE).images["demo/large:1"]
    manifest = info.manifests[0]
    (layer,) = manifest.layers
    storage = CacheStorage(devstack.settings().s3)
    if storage.size(layer.digest) is not None:
        storage.forget(layer.digest)  # left by an earlier run: the sink would link it, never download it
    storage.abort_uploads(layer.digest)
    layer_path = f"/blobs/{layer.digest}"

    with FaultProxy(f"http://{devstack.upstream_registry}") as upstream:
        # The first download trickles (about 20 s for the layer); the one after the restart runs at full speed.
        upstream.add(Slow(bytes_per_s=24 * MiB, chunk=256 * 1024), digest=layer.digest, method="GET", times=1)
        p = pipeline_factory(routes=[route(devstack, prefix, upstream_url=upstream.url)])
        p.start("fetcher")
        p.publish(registry=devstack.proxy_registry, repository=repository, digest=info.digest, reference="1")

        deadline = time.monotonic() + 120
        while upstream.body_bytes(layer_path) < 48 * MiB:  # past two 16 MiB parts: a multipart upload is open
            assert time.monotonic() < deadline, f"the layer download never got going\n{p.log('fetcher')}"
            time.sleep(0.05)
        assert storage.uploads_in_progress(layer.digest), "no multipart upload in progress mid-download"
        p.kill("fetcher")
        sent = upstream.body_bytes(layer_path)
        assert 48 * MiB <= sent < layer.size
        assert storage.size(layer.digest) is None  # the partial upload is invisible at the final key
        assert _image_cached(p, info.digest) == []

        p.start("fetcher")  # the same name: the same instance id, so the same transactional.id
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == info.digest for r in rs), timeout=300)
        _wait_committed(p, p.topics.manifest_pulled.name, 1)
        assert upstream.count(layer_path, method="GET") == 2  # killed once, then downloaded whole once

    assert len(_image_cached(p, info.digest)) == 1
    (item,) = [r for r in p.read(p.topics.layer_cached.name) if r["digest"] == layer.digest]
    assert (item["outcome"], item["bytes_fetched"]) == ("fetched", layer.size)
    # Everything the repository links to, listed from the bucket, re-hashes to its name and expected size.
    expected = {info.digest: info.size, manifest.config.digest: manifest.config.size, layer.digest: layer.size}
    links = storage.linked_digests(repository)
    assert sorted(links.values()) == sorted(expected)
    for digest in links.values():
        assert storage.rehash(digest) == (digest, expected[digest])
    storage.abort_uploads(layer.digest)  # the killed writer's parts: never visible, but they take space

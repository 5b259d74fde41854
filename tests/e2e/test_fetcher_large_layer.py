"""A layer far larger than the fetcher's memory budget streams through: the image completes, the stored blob
re-hashes to its digest, and the fetcher's resident memory never reaches 256 MiB."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfill.devstack.seed import build, seed
from tests.support.cachestore import CacheStorage
from tests.support.routes import route
from tests.support.rss import RssSampler
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
LARGE = 512 * MiB
RSS_LIMIT = 256 * MiB


def test_512mib_layer_completes_with_peak_rss_under_256mib(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("big")
    seed(devstack.ctx, large_size=LARGE, prefix=prefix, names=["demo/large:1"])
    info = build(devstack.ctx, LARGE).images["demo/large:1"]
    (layer,) = info.manifests[0].layers
    assert layer.size >= LARGE
    storage = CacheStorage(devstack.settings().s3)
    if storage.size(layer.digest) is not None:
        storage.forget(layer.digest)  # left by an earlier run: the sink would only link it, not stream it
    repository = f"{prefix}/demo/large"
    p = pipeline_factory(routes=[route(devstack, prefix)])
    fetcher = p.start("fetcher")

    with RssSampler(fetcher.pid, interval=0.1) as rss:
        p.publish(registry=devstack.proxy_registry, repository=repository, digest=info.digest, reference="1")
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == info.digest for r in rs), timeout=600)
    print(f"fetcher RSS: {rss.first / MiB:.1f} MiB idle, peak {rss.peak / MiB:.1f} MiB over {rss.samples} samples")

    (item,) = [r for r in p.read(p.topics.layer_cached.name) if r["digest"] == layer.digest]
    assert (item["outcome"], item["bytes_fetched"]) == ("fetched", layer.size)  # really streamed, not linked
    assert rss.samples >= 20
    assert rss.peak < RSS_LIMIT, f"fetcher peak RSS {rss.peak / MiB:.1f} MiB"
    assert storage.rehash(layer.digest) == (layer.digest, layer.size)
    assert storage.layer_link(repository, layer.digest) == layer.digest

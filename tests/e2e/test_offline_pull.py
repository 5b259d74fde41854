"""Seed scenario 2: with the upstream down, every image pulled earlier is still pullable by a client that has
none of its layers, including images whose layers the first client already had (so never asked for)."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from tests.e2e.conftest import upstream_stopped
from tests.support.clients import skopeo_pull, verify_layout_blobs
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

SMALL = 8 * 1024 * 1024


def _routes(devstack: DevStack, prefix: str, sink: str) -> list[dict]:
    return [
        {
            "registry": devstack.proxy_registry,
            "repository_prefix": prefix,
            "strip_prefix": False,
            "upstream_url": f"http://{devstack.upstream_registry}",
            "sink": sink,
            "proxy_url": f"http://{devstack.proxy_registry}",
        }
    ]


def _pull_a_then_b(devstack: DevStack, prefix: str, layout: Path) -> None:
    for name in ("app-a", "app-b"):
        res = skopeo_pull(devstack.proxy_registry, f"{prefix}/demo/{name}", "1", layout, tag=name)
        assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("sink", ["distribution", "registry"])
def test_image_with_skipped_base_layer_pulls_with_upstream_down(
    devstack: DevStack, catalog, pipeline_factory, tmp_path: Path, sink: str
) -> None:
    prefix = unique("s2")
    pushed = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=["demo/app-a:1", "demo/app-b:1"])
    digest_b = pushed[f"{prefix}/demo/app-b:1"]
    base = catalog.base_layer.digest
    p = pipeline_factory(routes=_routes(devstack, prefix, sink))
    p.start("bridge")
    p.start("fetcher")

    _pull_a_then_b(devstack, prefix, tmp_path / "client")  # B's base layer is skipped: the client has it

    cached = p.read(
        p.topics.image_cached.name,
        until=lambda rs: {r["digest"] for r in rs if r["repository"].startswith(prefix)} >= set(pushed.values()),
        timeout=240,
    )
    image_b = next(r for r in cached if r["digest"] == digest_b)
    assert [m["digest"] for m in image_b["manifests"]] == [digest_b]
    layers = p.read(p.topics.layer_cached.name)
    base_items = [r for r in layers if r["caused_by"] == image_b["caused_by"] and r["digest"] == base]
    assert len(base_items) == 1
    # The base layer's data was in the cache already (A's pull), only B's repository lacked it.
    assert base_items[0]["outcome"] in ({"linked"} if sink == "distribution" else {"fetched"})

    with upstream_stopped(devstack):
        for name in ("app-b", "app-a"):
            layout = tmp_path / f"offline-{name}"
            res = skopeo_pull(devstack.proxy_registry, f"{prefix}/demo/{name}", "1", layout)
            assert res.returncode == 0, f"{name}: {res.stderr}"
            got = verify_layout_blobs(layout)
            info = catalog.images[f"demo/{name}:1"]
            for blob in info.blobs():
                assert got.get(blob.digest) == blob.size


def test_without_layerfill_the_skipped_layer_is_missing_offline(devstack: DevStack, catalog, tmp_path: Path) -> None:
    """The control: same pulls, no layerfill running; the offline pull of B fails. Shows the test above can fail."""
    prefix = unique("ctl")
    seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=["demo/app-a:1", "demo/app-b:1"])
    _pull_a_then_b(devstack, prefix, tmp_path / "client")
    with upstream_stopped(devstack):
        res = skopeo_pull(devstack.proxy_registry, f"{prefix}/demo/app-b", "1", tmp_path / "offline")
    assert res.returncode != 0
    assert (
        catalog.base_layer.digest.split(":")[1][:12] in res.stderr
        or "500" in res.stderr
        or "error" in res.stderr.lower()
    )

"""A multi-platform index pulled for one platform: layerfill completes every platform, so with the upstream
down the other platform, and the whole index, still pull from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from tests.e2e.conftest import upstream_stopped
from tests.support.clients import layout_manifest_digests, skopeo_pull, verify_layout_blobs
from tests.support.routes import route
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

SMALL = 8 * 1024 * 1024
MULTI = "demo/multi:1"


def _platform_of(m: dict) -> str:
    p = m["platform"]
    return "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)


@pytest.mark.parametrize("sink", ["distribution", "registry"])
def test_other_platform_pulls_offline_after_a_single_platform_pull(
    devstack: DevStack, catalog, pipeline_factory, tmp_path: Path, sink: str
) -> None:
    prefix = unique("ma")
    repository = f"{prefix}/demo/multi"
    info = catalog.images[MULTI]
    index_digest = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=[MULTI])[f"{repository}:1"]
    assert index_digest == info.digest
    by_arch = {m.platform.split("/")[1]: m for m in info.manifests}
    assert set(by_arch) == {"amd64", "arm64"}
    p = pipeline_factory(routes=[route(devstack, prefix, sink)])
    p.start("bridge")
    p.start("fetcher")

    res = skopeo_pull(devstack.proxy_registry, repository, "1", tmp_path / "client", arch="amd64")
    assert res.returncode == 0, res.stderr
    assert layout_manifest_digests(tmp_path / "client") == [by_arch["amd64"].digest]  # one platform only

    cached = p.read(
        p.topics.image_cached.name, until=lambda rs: any(r["digest"] == index_digest for r in rs), timeout=120
    )
    (image,) = [r for r in cached if r["digest"] == index_digest]
    assert {m["digest"]: _platform_of(m) for m in image["manifests"]} == {m.digest: m.platform for m in info.manifests}
    for m in image["manifests"]:
        want = next(x for x in info.manifests if x.digest == m["digest"])
        assert m["config"]["digest"] == want.config.digest
        assert [b["digest"] for b in m["layers"]] == [b.digest for b in want.layers]

    with upstream_stopped(devstack):
        arm = tmp_path / "offline-arm64"
        res = skopeo_pull(devstack.proxy_registry, repository, "1", arm, arch="arm64")
        assert res.returncode == 0, f"arm64: {res.stderr}"
        every = tmp_path / "offline-all"
        res_all = skopeo_pull(devstack.proxy_registry, repository, "1", every, all_platforms=True)
        assert res_all.returncode == 0, f"--all: {res_all.stderr}"

    arm64 = by_arch["arm64"]
    assert layout_manifest_digests(arm) == [arm64.digest]
    got = verify_layout_blobs(arm)
    for blob in [arm64.config, *arm64.layers]:
        assert got.get(blob.digest) == blob.size
    assert got.get(arm64.digest) == arm64.size

    assert layout_manifest_digests(every) == [index_digest]
    got = verify_layout_blobs(every)
    assert got.get(index_digest) == info.size
    for m in info.manifests:
        assert got.get(m.digest) == m.size
        for blob in [m.config, *m.layers]:
            assert got.get(blob.digest) == blob.size


def test_without_layerfill_the_other_platform_is_missing_offline(devstack: DevStack, tmp_path: Path) -> None:
    """The control: the same single-platform pull, no layerfill; arm64 then fails offline."""
    prefix = unique("mactl")
    repository = f"{prefix}/demo/multi"
    seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=[MULTI])
    res = skopeo_pull(devstack.proxy_registry, repository, "1", tmp_path / "client", arch="amd64")
    assert res.returncode == 0, res.stderr
    with upstream_stopped(devstack):
        res = skopeo_pull(devstack.proxy_registry, repository, "1", tmp_path / "offline", arch="arm64")
    assert res.returncode != 0

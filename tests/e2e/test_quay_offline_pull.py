"""Seed scenario 2 through a real Quay proxy-cache organization: a client pulls A, then B into one OCI layout
(so it skips B's base layer), then one platform of the demo/multi index. With the upstream down, fresh pulls
of B, of both platforms of the index and of B's config:
- with layerfill (`quay-logs` from Quay's Kafka logs + the fetcher with the registry sink through Quay): all
  succeed;
- with Quay alone (its proxycacheblobworker only), the control: the platform nobody pulled is not in Quay and
  that pull fails (Quay answers 500), while B and its config succeed (B's base layer is in Quay's shared
  storage from A's pull), as measured in ../shared/quay/README.md."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from tests.e2e.conftest import upstream_stopped
from tests.support.clients import verify_layout_blobs
from tests.support.quay import Quay, quay_or_skip, quay_routes, skopeo_pull, start_quay_logs
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

SMALL = 8 * 1024 * 1024
IMAGES = ["demo/app-a:1", "demo/app-b:1", "demo/multi:1"]


@pytest.fixture
def quay(devstack: DevStack) -> Quay:
    return quay_or_skip(devstack)


def _repo(quay: Quay, prefix: str, name: str) -> str:
    return f"{quay.org}/{prefix}/{name}"


def _client_pulls(quay: Quay, prefix: str, tmp: Path) -> None:
    layout = tmp / "client"
    for name in ("demo/app-a", "demo/app-b"):
        res = skopeo_pull(quay, quay.registry, _repo(quay, prefix, name), "1", layout, tag=name.split("/")[1])
        assert res.returncode == 0, res.stderr
    res = skopeo_pull(quay, quay.registry, _repo(quay, prefix, "demo/multi"), "1", tmp / "client-multi", arch="amd64")
    assert res.returncode == 0, res.stderr


def _offline_pulls(quay: Quay, catalog, prefix: str, tmp: Path) -> dict[str, str | None]:
    """With the upstream down: each fresh pull -> None when it succeeded (every blob verified), else why not."""
    out: dict[str, str | None] = {}
    b = catalog.images["demo/app-b:1"]
    res = skopeo_pull(quay, quay.registry, _repo(quay, prefix, "demo/app-b"), "1", tmp / "offline-b")
    if res.returncode == 0:
        got = verify_layout_blobs(tmp / "offline-b")
        missing = [x.digest for x in b.blobs() if got.get(x.digest) != x.size]
        out["B"] = f"blobs missing from the layout: {missing}" if missing else None
    else:
        out["B"] = res.stderr.strip()[-300:]
    res = skopeo_pull(
        quay, quay.registry, _repo(quay, prefix, "demo/multi"), "1", tmp / "offline-multi", all_platforms=True
    )
    out["both platforms"] = None if res.returncode == 0 else res.stderr.strip()[-300:]
    config = b.manifests[0].config
    try:
        with quay.client() as client, client.open_blob(_repo(quay, prefix, "demo/app-b"), config.digest) as stream:
            size = sum(len(chunk) for chunk in stream)
        out["B's config"] = None if size == config.size else f"{size} bytes, expected {config.size}"
    except Exception as exc:  # the assertion below names it
        out["B's config"] = f"{type(exc).__name__}: {exc}"
    return out


def test_quay_with_layerfill_serves_every_pulled_image_with_upstream_down(
    devstack: DevStack, quay: Quay, catalog, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("q2")
    pushed = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=IMAGES)
    p = pipeline_factory(routes=quay_routes(quay, devstack))
    start_quay_logs(p, quay, "kafka")
    p.start("fetcher")

    _client_pulls(quay, prefix, tmp_path)

    want = {pushed[f"{prefix}/demo/app-b:1"], pushed[f"{prefix}/demo/multi:1"]}
    cached = p.read(
        p.topics.image_cached.name,
        until=lambda rs: {r["digest"] for r in rs if prefix in r["repository"]} >= want,
        timeout=180,
    )
    multi = next(r for r in cached if r["digest"] == pushed[f"{prefix}/demo/multi:1"])
    assert len(multi["manifests"]) == 2  # the platform nobody pulled too
    pulled = p.read(p.topics.manifest_pulled.name)
    assert {r["source"] for r in pulled} == {"quay"}
    assert all(r["registry"] == quay.registry for r in pulled)

    with upstream_stopped(devstack):
        results = _offline_pulls(quay, catalog, prefix, tmp_path)
    assert results == {"B": None, "both platforms": None, "B's config": None}, results


def test_quay_alone_misses_the_unpulled_platform_with_upstream_down(
    devstack: DevStack, quay: Quay, catalog, tmp_path: Path
) -> None:
    """The control: no layerfill. Quay's blob worker polls every 10 s, jobs wait 5 s: 30 s is time enough for it."""
    prefix = unique("q2c")
    seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=IMAGES)
    _client_pulls(quay, prefix, tmp_path)
    time.sleep(30)

    with upstream_stopped(devstack):
        results = _offline_pulls(quay, catalog, prefix, tmp_path)
    assert results["B"] is None and results["B's config"] is None, results
    assert results["both platforms"] is not None, "Quay alone served the platform nobody pulled"

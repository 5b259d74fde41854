"""Acceptance for `layerfill verify`: a cache made partial before layerfill ran (a client skipped layers it had)
is reported exactly, repaired through the fetcher, then pullable with the upstream down."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from tests.e2e.conftest import upstream_stopped
from tests.support.cachestore import CacheStorage
from tests.support.clients import skopeo_pull, verify_layout_blobs
from tests.support.images import push_random_image
from tests.support.ops_cli import run_cli, run_json
from tests.support.routes import route
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

SMALL = 8 * 1024 * 1024


def _blobs(layout: Path) -> set[str]:
    d = layout / "blobs" / "sha256"
    return {f"sha256:{b.name}" for b in d.iterdir()} if d.is_dir() else set()


def test_verify_reports_partial_images_and_repair_completes_them(
    devstack: DevStack, catalog, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("opsv")
    pushed: dict[str, str] = {}
    for part in ("one", "two"):
        pushed |= seed(
            devstack.ctx, large_size=SMALL, prefix=f"{prefix}/{part}", names=["demo/app-a:1", "demo/app-b:1"]
        )
    # One client store, no layerfill: every pull after the first skips blobs the store already has.
    client = tmp_path / "client"
    order = [
        f"{prefix}/one/demo/app-a",
        f"{prefix}/one/demo/app-b",
        f"{prefix}/two/demo/app-a",
        f"{prefix}/two/demo/app-b",
    ]
    expected_missing: dict[str, set[str]] = {}
    for repo in order:
        had = _blobs(client)
        res = skopeo_pull(devstack.proxy_registry, repo, "1", client, tag=repo.replace("/", "-"))
        assert res.returncode == 0, res.stderr
        info = catalog.images[f"demo/{repo.rsplit('/', 1)[1]}:1"]
        # skopeo always GETs the config (it reads it), so only layers the store had are skipped.
        skipped = {b.digest for b in info.blobs() if b.kind == "layer"} & had
        if skipped:
            expected_missing[repo] = skipped
    assert len(expected_missing) == 3, expected_missing  # one/app-b (base), two/app-a and two/app-b (everything)

    p = pipeline_factory(routes=[{
        "registry": devstack.proxy_registry, "repository_prefix": prefix, "strip_prefix": False,
        "upstream_url": f"http://{devstack.upstream_registry}", "sink": "distribution",
    }])  # fmt: skip

    before = run_json(p, "verify", "--prefix", f"{prefix}/", expect_rc=1)
    partial = {i["repository"]: i for i in before["images"] if i["status"] == "partial"}
    assert set(partial) == set(expected_missing)
    for repo, item in partial.items():
        assert {m["digest"] for m in item["missing"]} == expected_missing[repo]
        assert item["digest"] == pushed[f"{repo}:1"]
        assert item["tags"] == ["1"]
    assert before["counts"] == {"complete": 1, "partial": 3, "unknown": 0}

    p.start("fetcher")
    repaired = run_json(p, "verify", "--prefix", f"{prefix}/", "--repair", "--registry", devstack.proxy_registry,
                        expect_rc=1)  # fmt: skip
    assert {r["repository"] for r in repaired["repaired"]} == set(expected_missing)
    p.read(
        p.topics.image_cached.name,
        until=lambda rs: {r["repository"] for r in rs} >= set(expected_missing),
        timeout=120,
    )

    after = run_json(p, "verify", "--prefix", f"{prefix}/")
    assert after["counts"] == {"complete": 4, "partial": 0, "unknown": 0}
    table = run_cli(p, "verify", "--prefix", f"{prefix}/", "--all", "--deep")
    assert table.returncode == 0, table.stderr
    assert "4 complete, 0 partial, 0 unknown" in table.stdout

    with upstream_stopped(devstack):
        for repo in expected_missing:
            layout = tmp_path / f"offline-{repo.replace('/', '-')}"
            res = skopeo_pull(devstack.proxy_registry, repo, "1", layout)
            assert res.returncode == 0, f"{repo}: {res.stderr}"
            got = verify_layout_blobs(layout)
            for blob in catalog.images[f"demo/{repo.rsplit('/', 1)[1]}:1"].blobs():
                assert got.get(blob.digest) == blob.size


def test_repair_reaches_a_running_fetcher_that_believes_the_image_complete(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    """A blob lost from storage after the fetcher completed the image (a lifecycle rule, an operator's mistake):
    the running fetcher's memory and the state DB both say complete, yet `verify --repair` must refill it."""
    prefix = unique("opsr")
    img = push_random_image(devstack.upstream_registry, f"{prefix}/app", tmp_path / "img", 1024 * 1024)
    p = pipeline_factory(routes=[route(devstack, prefix)])
    p.start("fetcher")
    p.publish(registry=devstack.proxy_registry, repository=img.repository, digest=img.digest, reference="1")
    p.read(p.topics.image_cached.name, until=lambda rs: len(rs) == 1, timeout=120)
    # A repeat pull is answered from the fetcher's memory: no second ImageCached.
    p.publish(registry=devstack.proxy_registry, repository=img.repository, digest=img.digest, reference="1")

    storage = CacheStorage(devstack.settings().s3)
    storage.forget(img.layer_digest)
    before = run_json(p, "verify", "--prefix", f"{prefix}/", expect_rc=1)
    (partial,) = [i for i in before["images"] if i["status"] == "partial"]
    assert [m["digest"] for m in partial["missing"]] == [img.layer_digest]

    run_json(p, "verify", "--prefix", f"{prefix}/", "--repair", "--registry", devstack.proxy_registry, expect_rc=1)
    cached = p.read(p.topics.image_cached.name, until=lambda rs: len(rs) == 2, timeout=120)
    assert [r["digest"] for r in cached] == [img.digest, img.digest]
    assert storage.rehash(img.layer_digest) == (img.layer_digest, img.layer_size)
    assert run_json(p, "verify", "--prefix", f"{prefix}/")["counts"] == {"complete": 1, "partial": 0, "unknown": 0}


def test_verify_and_backfill_refuse_bad_input(devstack: DevStack, pipeline_factory) -> None:
    p = pipeline_factory()
    res = run_cli(p, "backfill", "--rate", "0", "--registry", devstack.proxy_registry)
    assert res.returncode == 2
    assert "rate" in res.stderr
    res = run_cli(p, "verify", "--repair", "--registry", "bad host!")
    assert res.returncode == 2
    assert "registry" in res.stderr

"""`layerfill backfill`: one ManifestPulled per manifest the proxy registry already holds (from its storage, or
through its catalog and tags API), resumable, by prefix."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from layerfill.ops.enumerate import format_position
from layerfill.state.store import StateStore
from layerfill.testimages.catalog import AMD64
from layerfill.testimages.layout import OciLayout
from layerfill.testimages.push import push_image
from tests.support.clients import skopeo_pull
from tests.support.faultproxy import FaultProxy, Status
from tests.support.ops_cli import run_cli, run_json
from tests.support.routes import route
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e


def test_backfill_publishes_each_stored_manifest_and_resumes(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("opsb")
    pushed = seed(devstack.ctx, large_size=8 * 1024 * 1024, prefix=prefix, names=["demo/app-a:1", "demo/app-b:1"])
    for name in pushed:
        repo, tag = name.rsplit(":", 1)
        assert (
            skopeo_pull(devstack.proxy_registry, repo, tag, tmp_path / "client", tag=repo.replace("/", "-")).returncode
            == 0
        )
    p = pipeline_factory()
    reg = ["--prefix", f"{prefix}/", "--registry", devstack.proxy_registry]

    dry = run_json(p, "backfill", *reg, "--dry-run")
    assert dry["would_publish"] == 2
    assert p.read(p.topics.manifest_pulled.name) == []

    # As if an earlier run stopped after the first manifest (enumeration is sorted by repository, digest).
    first_repo = sorted(n.rsplit(":", 1)[0] for n in pushed)[0]
    key = f"backfill:{devstack.proxy_registry}:{prefix}/"
    with StateStore(p.state_url) as state:
        state.set_kv(key, format_position((first_repo, pushed[f"{first_repo}:1"])))
    resumed = run_json(p, "backfill", *reg, "--rate", "20")
    assert resumed["published"] == 1
    events = p.read(p.topics.manifest_pulled.name, until=lambda rs: len(rs) == 1)
    assert [(e["repository"], e["source"], e["reference"]) for e in events] == [
        (f"{prefix}/demo/app-b", "backfill", "1")
    ]

    # A finished run clears its checkpoint: the next one covers everything again.
    with StateStore(p.state_url) as state:
        assert state.get_kv(key) is None
    again = run_json(p, "backfill", *reg)
    assert again["published"] == 2
    events = p.read(p.topics.manifest_pulled.name, until=lambda rs: len(rs) == 3)
    assert {(e["repository"], e["digest"]) for e in events[1:]} | {(events[0]["repository"], events[0]["digest"])} == {
        (n.rsplit(":", 1)[0], d) for n, d in pushed.items()
    }
    assert all(e["registry"] == devstack.proxy_registry for e in events)


SMALL = 8 * 1024 * 1024


def _blobs(layout: Path) -> set[str]:
    d = layout / "blobs" / "sha256"
    return {f"sha256:{b.name}" for b in d.iterdir()} if d.is_dir() else set()


def _push_tag(registry: str, repository: str, tag: str, workdir: Path) -> str:
    """A small image of its own under `repository:tag`; its manifest digest."""
    layout = OciLayout(workdir)
    layer = layout.add_random_layer(64 * 1024, random.randrange(1 << 62))
    image = layout.add_image([layer], AMD64, history=["64 KiB random bytes"])
    layout.tag(tag, image.manifest)
    layout.save()
    push_image(workdir, tag, registry, repository)
    return image.manifest.digest


def test_backfill_through_the_registry_api_completes_partial_images_and_resumes(
    devstack: DevStack, catalog, pipeline_factory, tmp_path: Path
) -> None:
    """A cache made partial before layerfill ran, enumerated through the proxy's /v2 API (not its storage): the
    events make every image complete, and a run stopped by a registry failure resumes without duplicates."""
    prefix = unique("opsba")
    pushed: dict[str, str] = {}
    for part in ("one", "two"):
        pushed |= seed(
            devstack.ctx, large_size=SMALL, prefix=f"{prefix}/{part}", names=["demo/app-a:1", "demo/app-b:1"]
        )
    order = sorted(n.rsplit(":", 1)[0] for n in pushed)  # one/app-a, one/app-b, two/app-a, two/app-b
    # One client store, no layerfill: every pull after the first skips layers the store already has.
    client = tmp_path / "client"
    partial: set[str] = set()
    for repo in order:
        had = _blobs(client)
        res = skopeo_pull(devstack.proxy_registry, repo, "1", client, tag=repo.replace("/", "-"))
        assert res.returncode == 0, res.stderr
        layers = {b.digest for b in catalog.images[f"demo/{repo.rsplit('/', 1)[1]}:1"].blobs() if b.kind == "layer"}
        if layers & had:
            partial.add(repo)
    assert len(partial) == 3, partial
    # A tag pushed upstream after the pulls: no client ever pulled it through the cache.
    unpulled = _push_tag(devstack.upstream_registry, order[0], "2", tmp_path / "tag2")

    p = pipeline_factory(routes=[route(devstack, prefix)])
    proxy_url = f"http://{devstack.proxy_registry}"
    base = ["--prefix", f"{prefix}/", "--registry", devstack.proxy_registry]
    api = [*base, "--source", "api", "--registry-url", proxy_url]

    # What distribution in proxy mode answers: _catalog from its storage (the four pulled repositories), but
    # tags/list from the upstream, so the API sees tag 2 as well; and the HEAD resolving tag 2 made the proxy
    # store that manifest, so storage holds it afterwards too.
    assert run_json(p, "backfill", *base, "--dry-run")["would_publish"] == 4
    assert run_json(p, "backfill", *api, "--dry-run")["would_publish"] == 5
    assert run_json(p, "backfill", *base, "--dry-run")["would_publish"] == 5
    assert p.read(p.topics.manifest_pulled.name) == []
    expected = {(n.rsplit(":", 1)[0], d) for n, d in pushed.items()} | {(order[0], unpulled)}

    p.start("fetcher")
    # The registry fails listing the third repository's tags (past the retries): the run stops there, keeping
    # a checkpoint after the events it published (one/app-a's two manifests, one/app-b's).
    with FaultProxy(proxy_url) as fp:
        fp.add(Status(503), path=f"^/v2/{order[2]}/tags/list")
        stopped = run_json(p, "backfill", *base, "--source", "api", "--registry-url", fp.url, expect_rc=1)
        assert fp.count(f"/v2/{order[2]}/tags/list") >= 2  # retried before giving up
    assert stopped["published"] == 3
    assert "503" in stopped["error"] and "run again to resume" in stopped["error"]
    assert stopped["checkpoint"].startswith(f"{order[1]}@")

    resumed = run_json(p, "backfill", *api, "--rate", "20")
    assert resumed["published"] == 2
    assert resumed["resumed_after"] == stopped["checkpoint"]
    assert resumed["skipped"] == []
    with StateStore(p.state_url) as state:
        assert state.get_kv(f"backfill-api:{devstack.proxy_registry}:{prefix}/") is None

    # Both runs have returned, so everything they published is on the topic: five events, none twice.
    events = p.read(p.topics.manifest_pulled.name)
    assert sorted((e["repository"], e["digest"]) for e in events) == sorted(expected)
    assert all(e["source"] == "backfill" and e["registry"] == devstack.proxy_registry for e in events)
    assert {e["digest"]: e["reference"] for e in events}[unpulled] == "2"

    p.read(
        p.topics.image_cached.name,
        until=lambda rs: {(r["repository"], r["digest"]) for r in rs} >= expected,
        timeout=180,
    )
    after = run_json(p, "verify", "--prefix", f"{prefix}/")
    assert after["counts"] == {"complete": 5, "partial": 0, "unknown": 0}


def test_backfill_api_without_catalog_names_the_way_out_and_uses_route_credentials(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("opsbc")
    repo = f"{prefix}/app"
    digest = _push_tag(devstack.upstream_registry, repo, "1", tmp_path / "img")
    with FaultProxy(f"http://{devstack.proxy_registry}") as fp:
        fp.add(Status(404), path="^/v2/_catalog")
        auth = fp.require_token(username="backfill", password="s3cret-backfill")
        # The route names the registry's URL and credentials: no --registry-url needed.
        p = pipeline_factory(routes=[{**route(devstack, prefix), "proxy_url": fp.url, "proxy_username": "backfill",
                                      "proxy_password": "s3cret-backfill"}])  # fmt: skip
        base = ["backfill", "--source", "api", "--prefix", f"{prefix}/", "--registry", devstack.proxy_registry]

        res = run_cli(p, *base, "--dry-run")
        assert res.returncode == 2, res.stderr
        assert devstack.proxy_registry in res.stderr and fp.url in res.stderr
        assert "--repository" in res.stderr and "--source storage" in res.stderr

        listed = run_json(p, *base, "--repository", repo, "--repository", "elsewhere/app")
        assert listed["published"] == 1 and listed["registry_url"] == fp.url
        assert auth.issued >= 1 and auth.refused == 0
    (event,) = p.read(p.topics.manifest_pulled.name)
    assert (event["repository"], event["digest"], event["reference"]) == (repo, digest, "1")

"""Issue 16 acceptance: signatures and SBOMs travel with the image. An image is pushed to the upstream, signed with
cosign (a key pair made here, no transparency log) and given an SBOM with oras; a client pulls only the image
through the proxy. After layerfill, with the upstream down, `cosign verify --key` against the cache succeeds,
`oras discover` lists the SBOM and `oras pull` gets it; without layerfill the same commands fail. Both sinks."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerfill.oci.referrers import cosign_tag
from layerfill.remote.client import RegistryClient
from layerfill.sinks.distribution import DistributionSink
from layerfill.testimages.catalog import AMD64, ARM64
from layerfill.testimages.layout import OciLayout
from layerfill.testimages.push import push_image
from tests.e2e.conftest import upstream_stopped
from tests.support.clients import skopeo_pull
from tests.support.images import push_random_image
from tests.support.routes import route
from tests.support.stack import DevStack, unique
from tests.support.supplychain import SBOM_TYPE, Signer, sbom_document

pytestmark = pytest.mark.e2e

SINKS = ["distribution", "registry"]


def _route(devstack: DevStack, prefix: str, sink: str, **policy) -> list[dict]:
    return [{**route(devstack, prefix, sink), "referrers": {"recheck_interval_s": 0, **policy}}]


def _wait_cached(p, digest: str, timeout: float = 120) -> dict:
    records = p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == digest for r in rs),
                     timeout=timeout)  # fmt: skip
    return next(r for r in records if r["digest"] == digest)


def _assert_offline_supply_chain(signer: Signer, ref: str, sbom: bytes, out: Path) -> None:
    verified = signer.verify(ref)
    assert verified.returncode == 0, verified.stderr
    assert "signatures were verified against the specified public key" in verified.stderr
    res, referrers = signer.discover(ref)
    assert res.returncode == 0, res.stderr
    sboms = [r for r in referrers if r.get("artifactType") == SBOM_TYPE]
    assert len(sboms) == 1, res.stdout
    ref_base = ref.split("@", 1)[0]
    pulled = signer.pull(f"{ref_base}@{sboms[0]['digest']}", out)
    assert pulled.returncode == 0, pulled.stderr
    assert (out / "sbom.spdx.json").read_bytes() == sbom


def _assert_status_counts(p, prefix: str, repo: str, digest: str) -> None:
    """`layerfill status` shows the artifact counts, per image and in total (from the fetcher's state DB). The
    image is found by its digest: with the registry sink, the artifacts layerfill GETs through the proxy are
    pulls the proxy notifies, so the same repository also lists them as images (no artifacts of their own)."""

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "layerfill.cli.main", "status", "--repository", prefix, *args],
                              env={**p.env("status"), "COLUMNS": "200"}, capture_output=True, text=True, timeout=60)  # fmt: skip

    deadline = time.monotonic() + 30  # the state DB is written just after the Kafka commit
    while True:
        res = status("--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        views = {(v["repository"], v["digest"]): v for v in doc["images"]}
        if views.get((repo, digest), {}).get("referrers") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    counts = views[(repo, digest)]["referrers"]
    assert (counts["signatures"], counts["sboms"]) == (1, 1), views
    assert doc["totals"]["referrers"]["signatures"] >= 1
    table = status()
    assert table.returncode == 0 and "1 sig, 1 sbom" in table.stdout, table.stdout
    assert "supply-chain artifacts: 1 signatures, 0 attestations, 1 SBOMs" in table.stdout


def _push_index(devstack: DevStack, repository: str, workdir: Path) -> tuple[str, dict[str, str]]:
    """A two-platform index with a random layer each; (index digest, {arch: manifest digest})."""
    layout = OciLayout(workdir)
    images = [layout.add_image([layout.add_random_layer(64 * 1024, random.randrange(1 << 62))], platform)
              for platform in (AMD64, ARM64)]  # fmt: skip
    index = layout.add_index(images)
    layout.tag("1", index)
    layout.save()
    push_image(workdir, "1", devstack.upstream_registry, repository)
    return index.digest, {i.manifest.platform.architecture: i.manifest.digest for i in images}


@pytest.mark.parametrize("sink", SINKS)
def test_signature_and_sbom_verify_offline_after_layerfill(
    devstack: DevStack, pipeline_factory, tmp_path: Path, sink: str
) -> None:
    prefix = unique("sig")
    repo = f"{prefix}/app"
    image = push_random_image(devstack.upstream_registry, repo, tmp_path / "img", 32 * 1024)
    signer = Signer(tmp_path / "keys")
    upstream_ref = f"{devstack.upstream_registry}/{repo}@{image.digest}"
    assert signer.sign(upstream_ref).returncode == 0
    sbom = sbom_document(prefix)
    attached = signer.attach_sbom(upstream_ref, sbom)
    assert attached.returncode == 0, attached.stderr

    p = pipeline_factory(routes=_route(devstack, prefix, sink))
    p.start("bridge")
    p.start("fetcher")
    res = skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "client")  # the image only
    assert res.returncode == 0, res.stderr
    cached = _wait_cached(p, image.digest)
    counts = cached["referrers"]
    assert (counts["signatures"], counts["sboms"], counts["error"]) == (1, 1, None), counts
    assert counts["bytes"] > len(sbom)
    _assert_status_counts(p, prefix, repo, image.digest)

    with upstream_stopped(devstack):
        _assert_offline_supply_chain(signer, f"{devstack.proxy_registry}/{repo}@{image.digest}", sbom,
                                     tmp_path / "sbom-out")  # fmt: skip


def test_without_layerfill_signature_and_sbom_are_missing_offline(devstack: DevStack, tmp_path: Path) -> None:
    """The control: same upstream artifacts and client pull, no layerfill; offline, every check fails."""
    prefix = unique("sigctl")
    repo = f"{prefix}/app"
    image = push_random_image(devstack.upstream_registry, repo, tmp_path / "img", 32 * 1024)
    signer = Signer(tmp_path / "keys")
    upstream_ref = f"{devstack.upstream_registry}/{repo}@{image.digest}"
    assert signer.sign(upstream_ref).returncode == 0
    assert signer.attach_sbom(upstream_ref, sbom_document(prefix)).returncode == 0
    # While the upstream is up, the same commands succeed through the proxy (it asks the upstream) ...
    online, _ = signer.discover(f"{devstack.upstream_registry}/{repo}@{image.digest}")
    assert online.returncode == 0
    res = skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "client")
    assert res.returncode == 0, res.stderr
    proxy_ref = f"{devstack.proxy_registry}/{repo}@{image.digest}"
    with upstream_stopped(devstack):
        # ... but the cache alone has the image and nothing that refers to it.
        assert skopeo_pull(devstack.proxy_registry, repo, image.digest, tmp_path / "offline").returncode == 0
        assert signer.verify(proxy_ref).returncode != 0
        res, referrers = signer.discover(proxy_ref)
        assert res.returncode != 0 or not referrers


@pytest.mark.parametrize("sink", SINKS)
def test_index_signed_per_platform_and_whole_verifies_offline(
    devstack: DevStack, pipeline_factory, tmp_path: Path, sink: str
) -> None:
    prefix = unique("sigidx")
    repo = f"{prefix}/multi"
    index, platforms = _push_index(devstack, repo, tmp_path / "img")
    signer = Signer(tmp_path / "keys")
    upstream = f"{devstack.upstream_registry}/{repo}"
    signed = signer.sign(f"{upstream}@{index}", recursive=True)  # the index and each platform manifest
    assert signed.returncode == 0, signed.stderr
    sbom = sbom_document(prefix)
    assert signer.attach_sbom(f"{upstream}@{index}", sbom).returncode == 0

    p = pipeline_factory(routes=_route(devstack, prefix, sink))
    p.start("bridge")
    p.start("fetcher")
    res = skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "client", arch="amd64")  # one platform
    assert res.returncode == 0, res.stderr
    counts = _wait_cached(p, index)["referrers"]
    assert (counts["signatures"], counts["sboms"], counts["error"]) == (3, 1, None), counts

    proxy = f"{devstack.proxy_registry}/{repo}"
    with upstream_stopped(devstack):
        for digest in (platforms["amd64"], platforms["arm64"]):  # arm64 was never pulled by a client
            verified = signer.verify(f"{proxy}@{digest}")
            assert verified.returncode == 0, f"{digest}: {verified.stderr}"
        _assert_offline_supply_chain(signer, f"{proxy}@{index}", sbom, tmp_path / "sbom-out")


def _cache_tag(devstack: DevStack, repository: str, tag: str) -> str | None:
    with DistributionSink(devstack.settings().s3) as storage:
        return storage.list_tags(repository).get(tag)


@pytest.mark.parametrize("sink", SINKS)
def test_a_signature_added_upstream_after_the_first_pull_is_cached_by_the_next_pull(
    devstack: DevStack, pipeline_factory, tmp_path: Path, sink: str
) -> None:
    prefix = unique("signew")
    repo = f"{prefix}/app"
    image = push_random_image(devstack.upstream_registry, repo, tmp_path / "img", 32 * 1024)
    first, second = Signer(tmp_path / "k1"), Signer(tmp_path / "k2")
    upstream_ref = f"{devstack.upstream_registry}/{repo}@{image.digest}"
    assert first.sign(upstream_ref).returncode == 0

    p = pipeline_factory(routes=_route(devstack, prefix, sink))
    p.start("bridge")
    p.start("fetcher")
    assert skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "c1").returncode == 0
    assert _wait_cached(p, image.digest)["referrers"]["signatures"] == 1

    assert second.sign(upstream_ref).returncode == 0  # cosign adds a layer: the .sig tag moves
    tag = cosign_tag(image.digest, "sig")
    with RegistryClient(f"http://{devstack.upstream_registry}") as upstream:
        head = upstream.head_manifest(repo, tag)
    assert head is not None
    assert _cache_tag(devstack, repo, tag) != head.digest

    # The next pull of the (complete) image: the check is due (interval 0) and finds the moved tag.
    assert skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / "c2").returncode == 0
    deadline = time.monotonic() + 60
    while _cache_tag(devstack, repo, tag) != head.digest:
        assert time.monotonic() < deadline, f"cache tag {tag} never moved to {head.digest}\n{p.log('fetcher')}"
        time.sleep(0.5)

    with upstream_stopped(devstack):
        proxy_ref = f"{devstack.proxy_registry}/{repo}@{image.digest}"
        for signer in (first, second):
            verified = signer.verify(proxy_ref)
            assert verified.returncode == 0, verified.stderr

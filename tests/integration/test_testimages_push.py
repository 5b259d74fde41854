"""Push the seed catalog with skopeo to a throwaway CNCF distribution registry started by this test."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import ImageIndex, ImageManifest, parse_manifest
from layerfill.oci.plan import Plan
from layerfill.testimages.catalog import Catalog, build_catalog
from layerfill.testimages.push import push_image, push_tree

pytestmark = pytest.mark.integration

PREFERRED_PORT = 25000


def require(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        if os.environ.get("LAYERFILL_SKIP_MISSING_TOOLS") == "1":
            pytest.skip(f"{binary} is not installed")
        pytest.fail(f"{binary} is not installed (apt-get install -y {package}); LAYERFILL_SKIP_MISSING_TOOLS=1 skips")
    return found


def free_port() -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", PREFERRED_PORT))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    binary = require("docker-registry", "docker-registry")
    require("skopeo", "skopeo")
    work = tmp_path_factory.mktemp("registry")
    port = free_port()
    (work / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    # 2.8's S3 driver trips over AWS_CA_BUNDLE; keep the environment minimal anyway.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    log = (work / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(work / "config.yml")], stdout=log, stderr=log, env=env)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"registry did not start: {(work / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield host, work / "data" / "docker" / "registry" / "v2"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return build_catalog(tmp_path_factory.mktemp("catalog"), large_size=1024 * 1024)


def get_manifest(host: str, repository: str, reference: str) -> tuple[bytes, str, str]:
    r = requests.get(
        f"http://{host}/v2/{repository}/manifests/{reference}",
        headers={"Accept": mt.ACCEPT_MANIFESTS},
        timeout=10,
    )
    r.raise_for_status()
    return r.content, r.headers["Content-Type"], r.headers["Docker-Content-Digest"]


def plan_from_registry(host: str, repository: str, reference: str) -> Plan:
    data, content_type, digest = get_manifest(host, repository, reference)
    plan = Plan(digest, len(data))
    parsed = parse_manifest(data, content_type)
    if isinstance(parsed, ImageIndex):
        for child in plan.add_index(digest, parsed):
            child_data, child_type, child_digest = get_manifest(host, repository, child.digest)
            assert child_digest == child.digest
            child_manifest = parse_manifest(child_data, child_type)
            assert isinstance(child_manifest, ImageManifest)
            plan.add_image(child.digest, child_manifest)
    else:
        plan.add_image(digest, parsed)
    return plan


def test_push_catalog(registry: tuple[str, Path], catalog: Catalog) -> None:
    host, storage = registry
    pushed = push_tree(catalog.root, host)
    assert pushed == [f"{host}/{name}" for name in sorted(catalog.images)]

    for info in catalog.images.values():
        _, _, digest = get_manifest(host, info.repository, info.tag)
        assert digest == info.digest
        plan = plan_from_registry(host, info.repository, info.tag)
        assert plan.complete
        assert [(b.digest, b.size) for b in plan.blobs] == [(b.digest, b.size) for b in info.blobs()]
        for blob in info.blobs():
            head = requests.head(f"http://{host}/v2/{info.repository}/blobs/{blob.digest}", timeout=10)
            assert head.status_code == 200
            assert int(head.headers["Content-Length"]) == blob.size
            hex_part = blob.digest.split(":")[1]
            assert (storage / "blobs" / "sha256" / hex_part[:2] / hex_part / "data").stat().st_size == blob.size
            link = storage / "repositories" / info.repository / "_layers" / "sha256" / hex_part / "link"
            assert link.read_text() == blob.digest


def test_push_converted_to_docker_media_types(registry: tuple[str, Path], catalog: Catalog) -> None:
    host, _ = registry
    info = catalog.images["demo/multi:1"]
    dest = push_image(catalog.layout_path("demo/multi:1"), "1", host, "docker/multi", dest_format="v2s2")
    assert dest == f"{host}/docker/multi:1"
    data, content_type, _ = get_manifest(host, "docker/multi", "1")
    assert content_type == mt.DOCKER_MANIFEST_LIST
    index = parse_manifest(data, content_type)
    assert isinstance(index, ImageIndex)
    assert {d.media_type for d in index.manifests} == {mt.DOCKER_MANIFEST}

    plan = plan_from_registry(host, "docker/multi", "1")
    # Conversion rewrites manifests and media types but not the gzip'd layer bytes.
    layers = {b.digest for b in plan.blobs if b.kind == "layer"}
    assert layers == {b.digest for b in info.blobs() if b.kind == "layer"}
    assert {b.media_type for b in plan.blobs if b.kind == "layer"} == {mt.DOCKER_LAYER_GZIP}
    assert plan.manifests_using(catalog.base_layer.digest) == [m.digest for m in plan.child_manifests]

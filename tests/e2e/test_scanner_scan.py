"""Seed scenario 1: Clair scan results are visible for every image in a proxied repository, including an image
pulled by a client that already had its base layer (so the proxy never stored it for that image).

The images are built per test with a unique base layer (a Debian 12 rootfs: os-release and a dpkg status with
base-files, libc6, zlib1g, openssl 3.0.11-1~deb12u2), so Clair has never seen it and must fetch it through
the URL layerfill gives it. The devstack's Clair has one vulnerability source, a local Debian security-tracker
feed naming CVE-2024-0727 for openssl (see devstack/services/clair_feed.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from layerfill.config.settings import TopicSpec
from layerfill.devstack.services.clair_feed import CVE, FIXED_VERSION
from layerfill.kafka.admin import delete_topics, ensure_topics
from layerfill.state import ScanState, StateStore
from layerfill.testimages import debian
from layerfill.testimages.catalog import AMD64
from layerfill.testimages.layout import OciLayout
from layerfill.testimages.push import push_image
from tests.e2e.conftest import upstream_stopped
from tests.support.clients import skopeo_pull
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

BASE_PACKAGES = {"base-files", "libc6", "zlib1g", "openssl"}
OPENSSL_VERSION = "3.0.11-1~deb12u2"


@dataclass(frozen=True)
class Pair:
    """Images A and B sharing a base layer, pushed to the upstream as <prefix>/demo/app-a:1 and app-b:1."""

    layout: Path
    base: str
    a: str
    b: str
    repo_a: str
    repo_b: str


def build_pair(devstack: DevStack, workdir: Path, prefix: str, *, base_bytes: int = 0) -> Pair:
    layout = OciLayout(workdir / "images")
    files = debian.rootfs_files()
    files["etc/layerfill-test-id"] = f"{prefix} {uuid.uuid4()}\n".encode()  # a base layer Clair has never seen
    if base_bytes:
        files["usr/share/layerfill/filler"] = os.urandom(base_bytes)  # incompressible: a slow layer to index
    base = layout.add_layer(files)
    a = layout.add_layer({"opt/app-a/run.sh": f"#!/bin/sh\necho {prefix} a\n".encode()})
    b = layout.add_layer({"opt/app-b/run.sh": f"#!/bin/sh\necho {prefix} b\n".encode()})
    image_a = layout.add_image([base, a], AMD64, history=["debian bookworm rootfs", "app-a"])
    image_b = layout.add_image([base, b], AMD64, history=["debian bookworm rootfs", "app-b"])
    layout.tag("app-a", image_a.manifest)
    layout.tag("app-b", image_b.manifest)
    layout.save()
    upstream = devstack.upstream_registry
    repo_a, repo_b = f"{prefix}/demo/app-a", f"{prefix}/demo/app-b"
    push_image(layout.root, "app-a", upstream, repo_a, dest_tag="1")
    push_image(layout.root, "app-b", upstream, repo_b, dest_tag="1")
    return Pair(layout.root, base.digest, image_a.manifest.digest, image_b.manifest.digest, repo_a, repo_b)


def routes(devstack: DevStack, prefix: str, sink: str) -> list[dict]:
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


class ScanPipeline:
    """A Pipeline plus what the scanner needs per test: its own retry topic and transactional id."""

    def __init__(self, p: Pipeline, retry_delays: str = "[2, 4, 8, 16, 30]") -> None:
        self.p = p
        self.retry_topic = f"lf-{p.id}.image-cached.retry"
        ensure_topics(p.settings.kafka, [TopicSpec(name=self.retry_topic, partitions=2)])
        self.env = {
            "LAYERFILL_TOPICS__IMAGE_CACHED_RETRY__NAME": self.retry_topic,
            "LAYERFILL_SCANNER__INSTANCE_ID": f"{p.id}-scanner",
            "LAYERFILL_SCANNER__RETRY_DELAYS_S": retry_delays,
            "LAYERFILL_SCANNER__ATTEMPTS_IN_PROCESS": "2",
        }

    def start_scanner(self) -> None:
        self.p.start("scanner", env=self.env)

    def scanned(self, digests: set[str], timeout: float = 180) -> dict[str, dict[str, Any]]:
        records = self.p.read(
            self.p.topics.image_scanned.name,
            until=lambda rs: {r["digest"] for r in rs} >= digests,
            timeout=timeout,
        )
        return {r["digest"]: r for r in records}

    def close(self) -> None:
        delete_topics(self.p.settings.kafka, [self.retry_topic])


def make_scan_pipelines(pipeline_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """The body of a `scan_pipeline` fixture: yields a factory of ScanPipelines, closes them afterwards."""
    made: list[ScanPipeline] = []

    def make(**kwargs: Any) -> ScanPipeline:
        retry_delays = kwargs.pop("retry_delays", "[2, 4, 8, 16, 30]")
        sp = ScanPipeline(pipeline_factory(**kwargs), retry_delays)
        made.append(sp)
        return sp

    yield make
    for sp in made:
        sp.p.close()
        sp.close()


@pytest.fixture
def scan_pipeline(pipeline_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    yield from make_scan_pipelines(pipeline_factory)


def clair_get(devstack: DevStack, path: str) -> dict[str, Any]:
    url = devstack.settings().scanner.clair_url
    resp = requests.get(f"{url}{path}", timeout=30)
    assert resp.status_code == 200, f"{path}: HTTP {resp.status_code} {resp.text[:300]}"
    return resp.json()


def assert_base_packages_and_cve(devstack: DevStack, digest: str, base: str) -> None:
    """Clair's own reports for `digest`: IndexFinished, the dpkg packages introduced by the base layer, and the
    feed's CVE on openssl."""
    index = clair_get(devstack, f"/indexer/api/v1/index_report/{digest}")
    assert index["state"] == "IndexFinished", index.get("err")
    packages = {pid: p for pid, p in index["packages"].items() if p["name"] in BASE_PACKAGES}
    assert {p["name"] for p in packages.values()} == BASE_PACKAGES
    for pid in packages:
        assert {env["introduced_in"] for env in index["environments"][pid]} == {base}
    report = clair_get(devstack, f"/matcher/api/v1/vulnerability_report/{digest}")
    found = [v for v in report["vulnerabilities"].values() if v["name"] == CVE]
    assert len(found) == 1, sorted(v["name"] for v in report["vulnerabilities"].values())
    assert found[0]["package"]["name"] == "openssl" and found[0]["fixed_in_version"] == FIXED_VERSION
    vulnerable_pkgs = [pid for pid, ids in report["package_vulnerabilities"].items() if found[0]["id"] in ids]
    assert [report["packages"][pid]["version"] for pid in vulnerable_pkgs] == [OPENSSL_VERSION]


def committed_offsets(p: Pipeline, group: str, topic: str) -> tuple[int, int]:
    """(committed, end) summed over the partitions of `topic` for consumer group `group`."""
    c = Consumer({"bootstrap.servers": p.settings.kafka.bootstrap_servers, "group.id": group})
    try:
        parts = [TopicPartition(topic, i) for i in c.list_topics(topic, timeout=10).topics[topic].partitions]
        committed = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
        end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
        return committed, end
    finally:
        c.close()


def layerfill_status(p: Pipeline, *args: str) -> subprocess.CompletedProcess:
    env = p.env("status")
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "layerfill.cli.main", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("sink", ["distribution", "registry"])
def test_every_image_is_scanned_including_the_one_whose_base_the_client_skipped(
    devstack: DevStack, scan_pipeline, tmp_path: Path, sink: str
) -> None:
    prefix = unique("sc1")
    pair = build_pair(devstack, tmp_path, prefix)
    sp = scan_pipeline(routes=routes(devstack, prefix, sink))
    p = sp.p
    p.start("bridge")
    p.start("fetcher")
    sp.start_scanner()

    client = tmp_path / "client"
    for repo in (pair.repo_a, pair.repo_b):  # B's base layer is skipped: the client has it from A
        res = skopeo_pull(devstack.proxy_registry, repo, "1", client, tag=repo.rsplit("/", 1)[-1])
        assert res.returncode == 0, res.stderr

    scanned = sp.scanned({pair.a, pair.b})
    if sink == "distribution":
        # Proof the client skipped it: B's repository only needed a link to data A's pull had stored.
        layers = p.read(p.topics.layer_cached.name)
        assert {r["outcome"] for r in layers if r["repository"] == pair.repo_b and r["digest"] == pair.base} == {
            "linked"
        }
    for digest, repo in ((pair.a, pair.repo_a), (pair.b, pair.repo_b)):
        ev = scanned[digest]
        assert (ev["state"], ev["repository"], ev["scanner"]) == ("indexed", repo, "clair"), ev
        assert ev["packages"] == len(BASE_PACKAGES), ev
        assert ev["vulnerabilities"]["unknown"] == 1 and sum(ev["vulnerabilities"].values()) == 1, ev
        assert ev["report_uri"].endswith(f"/matcher/api/v1/vulnerability_report/{digest}")
    assert_base_packages_and_cve(devstack, pair.b, pair.base)

    with StateStore(p.state_url) as store:
        row = store.scan_for(devstack.proxy_registry, pair.b)
        assert row is not None and row.state is ScanState.INDEXED and row.package_count == 4
        assert row.vulnerabilities is not None and row.vulnerabilities["unknown"] == 1

    res = layerfill_status(p, "--json", "--repository", prefix)
    assert res.returncode == 0, res.stderr
    views = {v["repository"]: v for v in json.loads(res.stdout)["images"]}
    b = views[pair.repo_b]
    assert b["complete"] is True and b["scan"] == "indexed"
    assert b["manifests"][0]["packages"] == 4 and b["manifests"][0]["vulnerabilities"]["unknown"] == 1
    table = layerfill_status(p, "--repository", prefix)
    assert table.returncode == 0, table.stderr
    assert pair.repo_b in table.stdout and "unknown 1" in table.stdout

    # A repeated ImageCached (a replay) is consumed and committed without a second scan.
    raw = p.read(p.topics.image_cached.name, raw=True)
    prod = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers})
    for r in raw:
        prod.produce(p.topics.image_cached.name, value=r["value"], key=r["key"])
    prod.flush(30)
    group = f"{p.id}-scanner"

    def caught_up(_: object) -> bool:
        committed, end = committed_offsets(p, group, p.topics.image_cached.name)
        return committed == end

    # Any topic will do: the condition is on the scanner's committed offsets.
    p.read(p.topics.image_scanned.name, until=caught_up, timeout=60)
    again = p.read(p.topics.image_scanned.name)
    assert sorted(r["digest"] for r in again) == sorted([pair.a, pair.b])


@pytest.mark.parametrize("sink", ["distribution", "registry"])
def test_a_skipped_base_layer_is_scanned_from_the_cache_with_the_upstream_down(
    devstack: DevStack, scan_pipeline, tmp_path: Path, sink: str
) -> None:
    """The client got A straight from the upstream, so the proxy never saw the base layer at all; it pulls B
    through the proxy and skips the base. Only layerfill's fill puts the base into the cache, and Clair reads it
    from there while the upstream is down."""
    prefix = unique("sc2")
    pair = build_pair(devstack, tmp_path, prefix)
    sp = scan_pipeline(routes=routes(devstack, prefix, sink))
    p = sp.p
    p.start("bridge")
    p.start("fetcher")
    client = tmp_path / "client"
    res = skopeo_pull(devstack.upstream_registry, pair.repo_a, "1", client, tag="app-a")
    assert res.returncode == 0, res.stderr
    res = skopeo_pull(devstack.proxy_registry, pair.repo_b, "1", client, tag="app-b")
    assert res.returncode == 0, res.stderr
    p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == pair.b for r in rs), timeout=120)
    base_items = [r for r in p.read(p.topics.layer_cached.name) if r["digest"] == pair.base]
    assert [r["outcome"] for r in base_items] == ["fetched"]  # the proxy had never stored it

    with upstream_stopped(devstack):
        sp.start_scanner()
        scanned = sp.scanned({pair.b}, timeout=120)
    assert scanned[pair.b]["state"] == "indexed", scanned[pair.b]
    assert scanned[pair.b]["packages"] == 4
    assert_base_packages_and_cve(devstack, pair.b, pair.base)

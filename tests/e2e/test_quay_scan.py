"""Seed scenario 1 with Quay. Quay's own security status (its securityworker against the devstack's Clair),
and layerfill's scanner: B, pulled through Quay's proxy-cache organization by a client that already had its
base layer from A, is indexed by Clair with the base layer's packages, while the upstream is down: every layer
comes from Quay (layerfill's scanner hands Clair Quay's blob URLs with a robot bearer token)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import upstream_stopped
from tests.e2e.test_scanner_scan import BASE_PACKAGES, assert_base_packages_and_cve, build_pair, make_scan_pipelines
from tests.support.quay import Quay, quay_or_skip, quay_routes, skopeo_pull, start_quay_logs, wait_for
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e


@pytest.fixture
def quay(devstack: DevStack) -> Quay:
    return quay_or_skip(devstack)


@pytest.fixture
def scan_pipeline(pipeline_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    yield from make_scan_pipelines(pipeline_factory)


def test_layerfill_scanner_indexes_b_from_quay_with_upstream_down(
    devstack: DevStack, quay: Quay, scan_pipeline, tmp_path: Path
) -> None:
    prefix = unique("q1")
    pair = build_pair(devstack, tmp_path, prefix)
    sp = scan_pipeline(routes=quay_routes(quay, devstack))
    p = sp.p
    start_quay_logs(p, quay, "kafka")
    p.start("fetcher")
    repo_b = f"{quay.org}/{pair.repo_b}"
    for repo in (pair.repo_a, pair.repo_b):  # B's base layer is skipped: the client has it from A
        res = skopeo_pull(
            quay, quay.registry, f"{quay.org}/{repo}", "1", tmp_path / "client", tag=repo.rsplit("/", 1)[-1]
        )
        assert res.returncode == 0, res.stderr
    p.read(p.topics.image_cached.name, until=lambda rs: pair.b in {r["digest"] for r in rs}, timeout=180)

    with upstream_stopped(devstack):
        sp.start_scanner()
        ev = sp.scanned({pair.b})[pair.b]
    assert (ev["state"], ev["repository"], ev["registry"]) == ("indexed", repo_b, quay.registry), ev
    assert ev["packages"] == len(BASE_PACKAGES), ev
    assert_base_packages_and_cve(devstack, pair.b, pair.base)


def test_quays_own_security_status_for_b_lists_the_base_layers_packages(
    devstack: DevStack, quay: Quay, pipeline_factory, tmp_path: Path
) -> None:
    """Quay's securityworker against the devstack's Clair, on B filled by layerfill, upstream down: Quay's own
    security API reports B scanned with the base layer's packages and the feed's CVE.

    The worker is started only once layerfill completed B: at this Quay commit, a proxied manifest the worker
    reaches before its blobs are stored (placeholders) is marked unsupported and never indexed again (seen here
    with a 5 s indexing interval, both with and without layerfill; see the README's "With Quay")."""
    if quay.stack.quay_secworker.process.pid() is None:
        pytest.skip("Quay's securityworker is not running on this stack")
    prefix = unique("q1s")
    pair = build_pair(devstack, tmp_path, prefix)
    p = pipeline_factory(routes=quay_routes(quay, devstack))
    start_quay_logs(p, quay, "kafka")
    p.start("fetcher")
    url = f"{quay.url}/api/v1/repository/{quay.org}/{pair.repo_b}/manifest/{pair.b}/security"
    headers = {"Authorization": f"Bearer {quay.api_token}"}
    doc: dict[str, Any] = {}

    def scanned() -> bool:
        nonlocal doc
        doc = requests.get(url, params={"vulnerabilities": "true"}, headers=headers, timeout=30).json()
        return doc.get("status") in ("scanned", "failed", "unsupported")

    quay.stack.stop("quay-secworker")
    try:
        for repo in (pair.repo_a, pair.repo_b):
            res = skopeo_pull(
                quay, quay.registry, f"{quay.org}/{repo}", "1", tmp_path / "client", tag=repo.rsplit("/", 1)[-1]
            )
            assert res.returncode == 0, res.stderr
        p.read(p.topics.image_cached.name, until=lambda rs: pair.b in {r["digest"] for r in rs}, timeout=180)
        with upstream_stopped(devstack):
            quay.stack.start("quay-secworker")
            wait_for(scanned, 120, "Quay's securityworker indexing B", interval=2)
    finally:
        quay.stack.start("quay-secworker")
    assert doc["status"] == "scanned", doc
    features = {f["Name"]: f for f in doc["data"]["Layer"]["Features"]}
    assert set(features) >= BASE_PACKAGES, sorted(features)
    assert any(v["Name"] == "CVE-2024-0727" for v in features["openssl"].get("Vulnerabilities", [])), features[
        "openssl"
    ]

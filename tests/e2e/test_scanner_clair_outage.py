"""Clair stopped in the middle of a scan and started again: the scan ends up recorded, exactly once, none lost
(the event waits on the scanner's retry topic while Clair is down)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from layerfill.kafka.retry import ATTEMPT
from layerfill.state import ScanState, StateStore
from tests.e2e.test_scanner_scan import assert_base_packages_and_cve, build_pair, make_scan_pipelines, routes
from tests.support.clients import skopeo_pull
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

# An incompressible file in the base layer keeps Clair busy long enough (download, hash, gunzip) to be stopped
# while it indexes.
FILLER_BYTES = 64 * 1024 * 1024


@pytest.fixture
def scan_pipeline(pipeline_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    yield from make_scan_pipelines(pipeline_factory)


@contextmanager
def clair_restarted_afterwards(devstack: DevStack) -> Iterator[None]:
    try:
        yield
    finally:
        devstack.stack.start("clair")


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout}s")


def test_stopping_clair_during_a_scan_loses_nothing(devstack: DevStack, scan_pipeline, tmp_path: Path) -> None:
    prefix = unique("out")
    pair = build_pair(devstack, tmp_path, prefix, base_bytes=FILLER_BYTES)
    sp = scan_pipeline(routes=routes(devstack, prefix, "distribution"), retry_delays="[3, 3, 5, 10, 20, 30]")
    p = sp.p
    p.start("bridge")
    p.start("fetcher")
    sp.start_scanner()
    registry = devstack.proxy_registry

    with StateStore(p.state_url) as store, clair_restarted_afterwards(devstack):
        res = skopeo_pull(registry, pair.repo_b, "1", tmp_path / "client", tag="b")
        assert res.returncode == 0, res.stderr

        # The scanner records `pending` right before it submits the manifest to Clair: stop Clair then.
        def pending() -> bool:
            row = store.scan_for(registry, pair.b)
            return row is not None and row.state is ScanState.PENDING

        wait_for(pending, 180, "the scan of B starting")
        devstack.stack.stop("clair")

        # With Clair down the attempt fails and the event goes to the retry topic (not the DLQ).
        retries = p.read(sp.retry_topic, raw=True, until=lambda rs: len(rs) >= 1, timeout=60)
        assert retries[0]["headers"][ATTEMPT] == b"1"
        row = store.scan_for(registry, pair.b)
        assert row is not None and row.state is ScanState.PENDING and "ClairUnavailable" in (row.error or "")
        time.sleep(4)  # down across at least one more retry round
        assert p.read(p.topics.image_scanned.name) == []

    # Clair is back: the retried event is scanned and recorded.
    scanned = sp.scanned({pair.b}, timeout=180)
    assert scanned[pair.b]["state"] == "indexed" and scanned[pair.b]["packages"] == 4, scanned[pair.b]
    assert_base_packages_and_cve(devstack, pair.b, pair.base)
    time.sleep(2)
    events = [r for r in p.read(p.topics.image_scanned.name) if r["digest"] == pair.b]
    assert len(events) == 1, events
    # Only this test's repositories: the proxy may deliver other tests' older notifications to this bridge,
    # and the fetcher dead-letters those for want of a route.
    assert [r for r in p.read(p.topics.dlq.name) if str(r.get("repository", "")).startswith(prefix)] == []
    with StateStore(p.state_url) as store:
        row = store.scan_for(registry, pair.b)
        assert row is not None and row.state is ScanState.INDEXED and row.package_count == 4
        assert row.attempts >= 2 and row.error is None

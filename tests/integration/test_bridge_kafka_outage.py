"""Acceptance (issue 3): with Kafka stopped the bridge answers 5xx, the proxy registry keeps retrying its
notifications (distribution's retrying sink retries any non-2xx/3xx answer, without limit), and once Kafka is back
every event arrives: none lost. Stops and starts the shared Kafka and runs the bridge on the shared port: run
under `flock /tmp/layerfill-e2e.lock`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from layerfill.devstack.seed import seed
from tests.support.clients import skopeo_pull
from tests.support.manifest_events import pulled_after_barrier, pulls
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration

SMALL = 8 * 1024 * 1024
# Below the proxy's notification timeout (5s in the devstack), so the registry receives the bridge's 503
# rather than giving up on the request first; the default (10s) is longer, see the report in the issue.
DELIVERY_TIMEOUT_S = "3"


def _answered(bridge_url: str, code: str) -> float:
    text = requests.get(f"{bridge_url}/metrics", timeout=5).text
    m = re.search(rf'^layerfill_bridge_requests_total{{code="{code}",endpoint="distribution"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.5)


def test_kafka_outage_bridge_answers_503_and_the_registry_retry_delivers_every_event(
    devstack: DevStack, catalog, tmp_path: Path
) -> None:
    prefix = unique("kdown")
    pushed = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=["demo/app-a:1", "demo/multi:1", "demo/app-b:1"])
    app_a, multi = f"{prefix}/demo/app-a", f"{prefix}/demo/multi"
    children = [m.digest for m in catalog.images["demo/multi:1"].manifests]
    proxy_log = devstack.ctx.paths.logs / "proxy.log"
    p = Pipeline(
        devstack, tmp_path / "pipeline", extra_env={"LAYERFILL_BRIDGE__DELIVERY_TIMEOUT_S": DELIVERY_TIMEOUT_S}
    )
    try:
        p.start("bridge")
        bridge_url = devstack.ctx.bridge_url
        log_offset = proxy_log.stat().st_size
        devstack.stack.stop("kafka")
        try:
            # The proxy serves from its upstream regardless; only its notifications are held back.
            for repo, extra in ((app_a, {}), (multi, {"all_platforms": True})):
                res = skopeo_pull(devstack.proxy_registry, repo, "1", tmp_path / repo.rsplit("/", 1)[1], **extra)
                assert res.returncode == 0, res.stderr
            # The registry got 503s, and retries: more than one 503 for the single event it sends at a time.
            _wait_for(lambda: _answered(bridge_url, "503") >= 2, 60, "two 503 answers from the bridge")
            assert "kafka unavailable, answering 503" in p.log("bridge")
        finally:
            devstack.stack.start("kafka")

        events = pulled_after_barrier(p, prefix, f"{prefix}/demo/app-b", timeout=240)
        reg = devstack.proxy_registry
        expected = {
            (reg, app_a, "1", pushed[f"{app_a}:1"]),
            (reg, multi, "1", pushed[f"{multi}:1"]),
            *((reg, multi, None, c) for c in children),
        }
        got = pulls(events)
        assert set(got) == expected, f"lost: {expected - set(got)}; unexpected: {set(got) - expected}"
        # At least once: a record the bridge had handed to Kafka before answering 503 may still be delivered
        # when Kafka returns, next to the registry's retry. Such a copy carries the same event_id.
        assert len({e["event_id"] for e in events}) == len(expected)
        print(f"{len(events)} records for {len(expected)} pulls; 503 answers: {_answered(bridge_url, '503'):.0f}")
        assert _answered(bridge_url, "200") >= len(expected)
        # The registry saw the 503s itself (its retrying sink logs each failed write).
        new_log = proxy_log.read_bytes()[log_offset:].decode(errors="replace")
        assert "response status 503" in new_log, new_log[-3000:]
    finally:
        p.close()

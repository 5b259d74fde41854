"""The cache's S3 server stopped for 30 s while layers are being written, then started again: every image ends
complete exactly once (the retry schedule outlasts the outage), nothing partial or wrong is visible at a final key,
and no multipart upload is left open (the ones cut off by the outage included)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.faults.conftest import scaled
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import FaultProxy, Slow
from tests.support.infrafaults import (
    EventSender,
    MiB,
    check_outputs,
    check_storage,
    outcome_counts,
    push_images,
    wait_all_committed,
    wait_terminal,
    write_results,
)
from tests.support.routes import route
from tests.support.stack import DevStack, unique

OUTAGE_S = 30
LAYER = 12 * MiB  # three 5 MiB parts: a multipart upload is open for most of each layer's transfer
TRICKLE = 2 * MiB  # bytes/s per download: each layer takes ~6 s, so fills are in flight when S3 goes away


def test_s3_stopped_for_30s_during_fills(devstack: DevStack, pipeline_factory, tmp_path: Path) -> None:
    n = scaled(12, 20)
    prefix = unique("s3out")
    images = push_images(devstack, prefix, tmp_path, [LAYER] * n)
    storage = CacheStorage(devstack.settings().s3)
    # The schedule (5+10+20+40 s after the in-process attempts) must outlast the outage plus S3's restart.
    delays = [5, 10, 20, 40]
    env = {"LAYERFILL_FETCHER__RETRY_DELAYS_S": json.dumps(delays), "LAYERFILL_FETCHER__PART_BYTES": str(5 * MiB)}

    with FaultProxy(f"http://{devstack.upstream_registry}") as upstream:
        upstream.add(Slow(bytes_per_s=TRICKLE), path="/blobs/", method="GET")
        p = pipeline_factory(routes=[route(devstack, prefix, upstream_url=upstream.url)], extra_env=env)
        p.start("fetcher")
        sender = EventSender(p, devstack.proxy_registry)
        try:
            for im in images:
                sender.send(im)
        finally:
            sender.close()

        # Stop S3 once layer downloads are past their first part: multipart uploads are open right then.
        deadline = time.monotonic() + 180
        while True:
            midway = [r for r in upstream.requests("/blobs/", "GET") if not r.done and r.body_bytes > 6 * MiB]
            if len(midway) >= 2:
                break
            assert time.monotonic() < deadline, f"layer downloads never got going\n{p.log('fetcher')}"
            time.sleep(0.1)
        in_flight = len([r for r in upstream.requests("/blobs/", "GET") if not r.done])
        done_before = len(p.read(p.topics.image_cached.name))
        devstack.stack.stop("s3")
        try:
            time.sleep(OUTAGE_S)
        finally:
            devstack.stack.start("s3")

        sent = sender.sent
        obs = wait_terminal(p, [s.event_id for s in sent], timeout=300)
        wait_all_committed(p)
        assert p.procs["fetcher"].poll() is None, f"the fetcher exited\n{p.log('fetcher')}"
        blob_gets = upstream.count("/blobs/", "GET")

    problems = check_outputs(sent, obs) + check_storage(images, storage)
    retry_errors = [r["headers"].get("layerfill.retry.last_error", b"").decode() for r in
                    p.read(p.topics.retry.name, raw=True)]  # fmt: skip
    s3_retries = [e for e in retry_errors if "S3 " in e or "SinkUnavailable" in e]
    result = {
        "fault": f"S3 server stopped for {OUTAGE_S} s during fills, then started",
        "images": n,
        "layer_bytes": LAYER,
        "layer_downloads_in_flight_at_stop": in_flight,
        "images_complete_before_stop": done_before,
        "retry_records": len(retry_errors),
        "retry_records_citing_s3": len(s3_retries),
        "dead_letters": sum(len(v) for v in obs.dead.values()),
        "upstream_blob_gets": blob_gets,
        "outcomes": outcome_counts(sent, obs),
        "problems": problems,
    }
    write_results(devstack, "s3-outage", result)
    assert not problems, "\n".join(problems)
    # The outage really hit fills: events went through the retry topic because S3 was unavailable.
    assert s3_retries, f"no retry cites S3 (retries: {retry_errors[:3]})\n{p.log('fetcher')}"
    assert done_before < n

"""An upstream that serves wrong bytes for a layer: nothing is stored for it, the event goes through the retry
topic to the dead-letter topic with the digest mismatch as its cause, and other images complete meanwhile."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.kafka.retry import read_retry_headers
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import Corrupt, FaultProxy
from tests.support.images import push_random_image
from tests.support.routes import route
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _headers(record: dict) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in record["headers"].items()}


def test_wrong_digest_is_never_stored_and_dead_lettered_while_others_complete(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("wd")
    bad = push_random_image(devstack.upstream_registry, f"{prefix}/bad", tmp_path / "bad", 2 * MiB)
    good_repo = f"{prefix}/demo/app-b"
    good_digest = seed(devstack.ctx, large_size=8 * MiB, prefix=prefix, names=["demo/app-b:1"])[f"{good_repo}:1"]
    storage = CacheStorage(devstack.settings().s3)
    assert storage.size(bad.layer_digest) is None  # random content: nobody can have stored it

    with FaultProxy(f"http://{devstack.upstream_registry}") as upstream:
        upstream.add(Corrupt(at=bad.layer_size // 2, count=4), digest=bad.layer_digest)
        p = pipeline_factory(routes=[route(devstack, prefix, upstream_url=upstream.url)])
        p.start("fetcher")
        bad_event = p.publish(registry=devstack.proxy_registry, repository=bad.repository, digest=bad.digest)

        # Once the bad event waits in the retry topic, a good one must still be served.
        p.read(p.topics.retry.name, until=lambda rs: len(rs) >= 1, timeout=120, raw=True)
        p.publish(registry=devstack.proxy_registry, repository=good_repo, digest=good_digest, reference="1")
        cached = p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == good_digest for r in rs))
        (dead,) = p.read(p.topics.dlq.name, until=lambda rs: len(rs) >= 1, timeout=180, raw=True)
        env = p.env("fetcher")
        delays = json.loads(env["LAYERFILL_FETCHER__RETRY_DELAYS_S"])
        attempts = int(env.get("LAYERFILL_FETCHER__ATTEMPTS_IN_PROCESS", p.settings.fetcher.attempts_in_process))
        corrupted_gets = upstream.count(f"/blobs/{bad.layer_digest}", method="GET")

    # The cause, named in the dead letter: a digest mismatch of exactly that layer.
    dlq = parse_dlq_headers(list(dead["headers"].items()))
    assert dlq["error.class"] in ("SinkIntegrityError", "DigestMismatch"), dlq
    assert "digest mismatch" in dlq["error.message"] and bad.layer_digest in dlq["error.message"], dlq
    assert dlq["original.topic"] == p.topics.retry.name
    assert dlq["consumer.group"] == f"{p.id}-fetcher"
    (original,) = [r for r in p.read(p.topics.manifest_pulled.name, raw=True) if r["offset"] == bad_event.offset
                   and r["partition"] == bad_event.partition]  # fmt: skip
    assert dead["value"] == original["value"]  # the original bytes, unchanged

    # Retried through the retry topic once per configured delay, each time after the in-process attempts.
    retries = [r for r in p.read(p.topics.retry.name, raw=True) if r["value"] == original["value"]]
    assert [read_retry_headers(list(r["headers"].items())).attempt for r in retries] == [1, 2]
    assert all("digest mismatch" in _headers(r)["layerfill.retry.last_error"] for r in retries)
    assert len(delays) == 2
    assert corrupted_gets == attempts * (len(delays) + 1)

    # Never stored: no data at the blob's final key, no link, no upload left open; no ImageCached for it.
    assert storage.size(bad.layer_digest) is None
    assert storage.layer_link(bad.repository, bad.layer_digest) is None
    assert storage.uploads_in_progress(bad.layer_digest) == []
    assert not [r for r in cached if r["digest"] == bad.digest]

    # "Meanwhile": the good image completed before the bad event was dead-lettered.
    (good,) = [r for r in cached if r["digest"] == good_digest]
    assert good["completed_at"] < datetime.fromisoformat(dlq["failed.at"])

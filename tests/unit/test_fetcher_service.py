"""The fetcher's stage: what it emits for a ManifestPulled, what it records and when (only once the outputs are
committed), and when it retries or dead-letters. A real upstream registry over HTTP in process
(tests/unit/registry_fake.py), the in-memory sink of test_fetcher_fill_cost, a real SQLite state DB and the real
codec; Kafka is not involved: `process` is the batch handler the transactional loop calls, and each Outcome is
what the loop would commit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from layerfill.config.settings import KafkaSettings, Settings
from layerfill.consumers.fetcher.service import FetcherService
from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.kafka.keys import DIGEST_HEADER, SOURCE_HEADER, image_fingerprint
from layerfill.kafka.retry import ATTEMPT, read_retry_headers
from layerfill.kafka.txloop import Outcome
from layerfill.producers.publisher import build_event, manifest_pulled_record
from layerfill.serde import events
from layerfill.serde.codec import EventCodec
from layerfill.state.records import ImageStatus
from tests.support.stages import processed
from tests.unit.registry_fake import FakeRegistry, Fault
from tests.unit.test_fetcher_fill_cost import MemorySink

pytestmark = pytest.mark.unit

REGISTRY = "cache.test:5000"
REPO = "team/app"
OCI = "application/vnd.oci.image.manifest.v1+json"
codec = EventCodec()


@pytest.fixture
def upstream() -> Iterator[FakeRegistry]:
    with FakeRegistry() as reg:
        yield reg


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def route_extra() -> dict[str, Any]:
    return {}


@pytest.fixture
def fetcher(
    upstream: FakeRegistry, sink: MemorySink, tmp_path: Path, route_extra: dict[str, Any]
) -> Iterator[FetcherService]:
    route = {"registry": REGISTRY, "upstream_url": upstream.url, "sink": "distribution",
             "upstream_cost": {"grace_s": 0, "idle_s": 0.05, "poll_s": 0.01}, **route_extra}  # fmt: skip
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"log_level": "0"}),
        fetcher={"attempts_in_process": 2, "retry_delays_s": [5.0], "health_port": None},
        state={"database_url": f"sqlite:///{tmp_path / 'state.db'}"},
        routes=[route],
    )
    svc = FetcherService(settings, codec=codec)
    svc.sinks.make = lambda route, s3: sink  # type: ignore[method-assign]  # storage is the other network boundary
    yield svc
    svc.image_pool.shutdown()
    svc.close()
    svc.state.close()


def image(reg: FakeRegistry, layers: list[bytes]) -> tuple[str, list[str]]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    blobs = [reg.add_blob(REPO, b) for b in [config, *layers]]
    sizes = [len(config), *map(len, layers)]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0], "size": sizes[0]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                   for d, s in zip(blobs[1:], sizes[1:], strict=True)],
    }).encode()  # fmt: skip
    return reg.add_manifest(REPO, manifest), blobs


def pulled(digest: str, *, repository: str = REPO, event_id: str = "pull-1", source: str = "distribution") -> dict:
    return events.manifest_pulled(event_id=event_id, source=source, registry=REGISTRY, repository=repository,
                                  digest=digest, media_type=OCI)  # fmt: skip


def message(ev: dict[str, Any], *, offset: int = 0, headers: list[Any] | None = None) -> Message:
    topic = "layerfill.manifest-pulled"
    return Message(topic=topic, partition=0, offset=offset, key=b"k", value=codec.encode("ManifestPulled", ev, topic),
                   headers=headers or [])  # fmt: skip


def committed(out: Outcome) -> None:
    """What the loop does once the outcome's records and offset are committed."""
    if out.after_commit is not None:
        out.after_commit()


def status(svc: FetcherService, digest: str) -> Any:
    return svc.state.image_status(REGISTRY, REPO, digest)


def test_a_pulled_image_is_filled_and_recorded_complete_only_once_committed(
    fetcher: FetcherService, upstream: FakeRegistry, sink: MemorySink
) -> None:
    digest, blobs = image(upstream, [b"a" * 1000, b"b" * 2000])
    [out] = processed(fetcher, [message(pulled(digest))])
    assert out.label == "complete"
    assert set(blobs) <= set(sink.data)
    decoded = [(r.topic, codec.decode(r.value)[1], dict(r.headers)) for r in out.records]
    assert [t for t, _, _ in decoded] == ["layerfill.layer-cached"] * 3 + ["layerfill.image-cached"]
    assert all(h["layerfill.caused_by"] == b"pull-1" for _, _, h in decoded)
    assert {v["digest"] for _, v, _ in decoded[:3]} == set(blobs)
    assert decoded[3][1]["digest"] == digest and decoded[3][1]["caused_by"] == "pull-1"
    assert status(fetcher, digest).status is ImageStatus.FILLING  # the commit has not happened yet
    committed(out)
    assert status(fetcher, digest).status is ImageStatus.COMPLETE
    # Pulled again: answered from the cache of complete images; the image is not fetched again (a due look for
    # new signatures and SBOMs aside).
    fetched = [(s.method, s.path) for s in upstream.seen if "/referrers/" not in s.path and "sha256-" not in s.path]
    [again] = processed(fetcher, [message(pulled(digest, event_id="pull-2"))])
    assert again.label == "already_complete" and again.quiet
    assert [
        (s.method, s.path) for s in upstream.seen if "/referrers/" not in s.path and "sha256-" not in s.path
    ] == fetched


@pytest.mark.parametrize("route_extra", [{"referrers": {"follow": []}}])  # no artifact rechecks on this route
def test_repeats_with_the_producers_headers_are_answered_without_decoding(
    fetcher: FetcherService, upstream: FakeRegistry
) -> None:
    digest, _ = image(upstream, [b"h" * 100])
    record = manifest_pulled_record(codec, "layerfill.manifest-pulled", build_event(
        registry=REGISTRY, repository=REPO, digest=digest, source="distribution"))  # fmt: skip
    headers = list(record.headers)

    def raw(value: bytes, hdrs: list[Any], offset: int) -> Message:
        return Message(topic="layerfill.manifest-pulled", partition=0, offset=offset, key=record.key, value=value,
                       headers=hdrs)  # fmt: skip

    [first] = processed(fetcher, [raw(record.value, headers, 1)])
    assert first.label == "complete"
    committed(first)
    # The first repeat is decoded: it tells the artifact checker the route never rechecks.
    [repeat] = processed(fetcher, [raw(record.value, headers, 2)])
    assert repeat.label == "already_complete"
    # Known complete, nothing due: the key and headers suffice, the body is not decoded.
    [repeat] = processed(fetcher, [raw(b"\x00 not avro", headers, 2)])
    assert repeat is not None and repeat.label == "already_complete" and repeat.records == []
    # Without the digest header (an older producer), or as a backfill, the record is decoded.
    no_digest = [(k, v) for k, v in headers if k != DIGEST_HEADER]
    backfill = [(k, b"backfill" if k == SOURCE_HEADER else v) for k, v in headers]
    outs = processed(fetcher, [raw(b"\x00 not avro", no_digest, 3), raw(b"\x00 not avro", backfill, 4)])
    assert [o.label for o in outs] == ["dead_lettered", "dead_lettered"]  # decoded: the garbage shows
    [decoded] = processed(fetcher, [raw(record.value, no_digest, 5)])
    assert decoded.label == "already_complete"


def test_duplicates_in_a_batch_and_invalid_events(fetcher: FetcherService, upstream: FakeRegistry) -> None:
    digest, _ = image(upstream, [b"c" * 100])
    bad = message(pulled(digest, repository="UPPER/Case"), offset=3)
    outs = processed(fetcher, [message(pulled(digest), offset=1), message(pulled(digest), offset=2), bad])
    assert [o.label for o in outs] == ["complete", "duplicate_in_batch", "dead_lettered"]
    headers = parse_dlq_headers(outs[2].records[0].headers)
    assert headers["stage"] == "fetcher" and headers["attempts"] == "1" and headers["original.offset"] == "3"
    assert headers["error.class"] == "InvalidReference" and "repository" in headers["error.message"]
    assert outs[2].records[0].value == bad.value()  # the bytes unchanged
    assert outs[2].after_commit is None  # an invalid event's fields never reach the state DB


def test_a_permanent_upstream_error_is_dead_lettered_at_once(fetcher: FetcherService, upstream: FakeRegistry) -> None:
    missing = "sha256:" + "e" * 64
    [out] = processed(fetcher, [message(pulled(missing))])
    assert out.label == "dead_lettered"
    headers = parse_dlq_headers(out.records[0].headers)
    assert headers["error.class"] == "NotFound" and headers["attempts"] == "1"
    assert len(upstream.requests_to(f"/v2/{REPO}/manifests/{missing}", "GET")) == 1  # not retried
    assert status(fetcher, missing).status is ImageStatus.FILLING
    committed(out)
    row = status(fetcher, missing)
    assert row.status is ImageStatus.FAILED and row.last_error.startswith("NotFound: ")


def test_a_transient_failure_goes_to_the_retry_topic_and_the_state_db_learns_it_after_the_commit(
    fetcher: FetcherService, upstream: FakeRegistry
) -> None:
    digest, _ = image(upstream, [b"d" * 100])
    # A Retry-After longer than the client or the stage waits in process: straight to the retry topic.
    upstream.script(f"/v2/{REPO}/manifests/{digest}", Fault(status=429, headers={"Retry-After": "60"}))
    [out] = processed(fetcher, [message(pulled(digest))])
    assert out.label == "retried"
    [rec] = out.records
    assert rec.topic == "layerfill.manifest-pulled.retry" and dict(rec.headers)[ATTEMPT] == b"1"
    assert read_retry_headers(rec.headers).due_ms >= int(time.time() * 1000) + 59_000  # the upstream's pause
    # Before the commit the state DB says only that a fill started: an aborted transaction must not leave
    # a "retrying" row for a retry that was never published.
    row = status(fetcher, digest)
    assert row.status is ImageStatus.FILLING and row.last_error is None
    committed(out)
    row = status(fetcher, digest)
    assert row.status is ImageStatus.FAILED and row.last_error.startswith("retrying: RateLimited: ")


def test_the_retry_comes_back_and_completes(fetcher: FetcherService, upstream: FakeRegistry) -> None:
    digest, _ = image(upstream, [b"f" * 100])
    upstream.script(f"/v2/{REPO}/manifests/{digest}", Fault(status=429, headers={"Retry-After": "60"}))
    [retried] = processed(fetcher, [message(pulled(digest))])
    committed(retried)
    rec = retried.records[0]
    back = Message(topic=rec.topic, partition=0, offset=0, key=rec.key, value=rec.value, headers=rec.headers)
    [out] = processed(fetcher, [back])
    assert out.label == "complete"
    committed(out)
    assert status(fetcher, digest).status is ImageStatus.COMPLETE


def test_retries_used_up_dead_letter_with_every_attempt_counted(
    fetcher: FetcherService, upstream: FakeRegistry
) -> None:
    digest, _ = image(upstream, [b"g" * 100])
    upstream.script(f"/v2/{REPO}/manifests/{digest}", Fault(status=429, headers={"Retry-After": "60"}))
    [out] = processed(fetcher, [message(pulled(digest), headers=[(ATTEMPT, b"1")])])  # its one retry was used
    assert out.label == "dead_lettered"
    assert parse_dlq_headers(out.records[0].headers)["attempts"] == "2"
    committed(out)
    assert status(fetcher, digest).last_error.startswith("RateLimited: ")


def test_a_backfill_event_of_a_complete_image_checks_storage_again(
    fetcher: FetcherService, upstream: FakeRegistry, sink: MemorySink
) -> None:
    digest, blobs = image(upstream, [b"h" * 100])
    committed(processed(fetcher, [message(pulled(digest))])[0])
    del sink.data[blobs[1]]  # storage lost a layer the state DB says is there
    [out] = processed(fetcher, [message(pulled(digest, event_id="backfill-1", source="backfill"))])
    assert out.label == "complete" and blobs[1] in sink.data


def test_a_starting_fetcher_knows_the_complete_images_and_answers_their_repeats_in_triage(
    fetcher: FetcherService, upstream: FakeRegistry
) -> None:
    digest, _ = image(upstream, [b"w" * 100])
    fetcher.state.mark_complete(REGISTRY, REPO, digest, total_bytes=0, fetched_bytes=0, blobs=[])
    [before] = fetcher.process([message(pulled(digest))])
    assert not isinstance(before, Outcome)  # unknown to this process: a state DB lookup on the pool
    assert before.result().label == "already_complete"
    fetcher.known_complete = type(fetcher.known_complete)(maxsize=10)  # as a new process starts
    assert fetcher.warm_up() == 1
    [after] = fetcher.process([message(pulled(digest, event_id="pull-2"))])
    assert isinstance(after, Outcome) and after.label == "already_complete" and after.quiet


def test_warming_up_without_a_state_db_is_not_fatal(fetcher: FetcherService, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(limit: int) -> list[tuple[str, str, str]]:
        raise OSError("state DB down")

    monkeypatch.setattr(fetcher.state, "recently_complete", down)
    assert fetcher.warm_up() == 0


def test_known_images_caps_every_per_image_structure(fetcher: FetcherService, tmp_path: Path) -> None:
    settings = fetcher.settings.model_copy(update={"fetcher": fetcher.settings.fetcher.model_copy(
        update={"known_images": 2})})  # fmt: skip
    small = FetcherService(settings, codec=codec)
    try:
        fps = [image_fingerprint(b"image-%d" % i) for i in range(5)]
        for fp in fps:
            small.known_complete[fp] = float("inf")
            small.referrers._claimed[fp] = 1.0
        assert len(small.known_complete) == 2 and small.known_complete.get(fps[4]) == float("inf")
        assert len(small.referrers._claimed) == 2
    finally:
        small.image_pool.shutdown()
        small.close()
        small.state.close()


def test_known_images_must_be_positive() -> None:
    with pytest.raises(ValueError, match="known_images"):
        Settings(fetcher={"known_images": 0})

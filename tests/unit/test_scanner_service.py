"""The scanner's per-event decisions, against the scripted Clair and a real SQLite state DB: what it emits, what
it records once committed, and when it retries or dead-letters. Kafka is not involved: `process` is the batch
handler the transactional loop calls, and each Outcome is what the loop would commit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from layerfill.config.routes import Route
from layerfill.config.settings import KafkaSettings, ScannerSettings, Settings
from layerfill.consumers.scanner.service import ScannerService
from layerfill.kafka.retry import ATTEMPT, DUE_MS
from layerfill.kafka.txloop import Outcome
from layerfill.oci import mediatypes as mt
from layerfill.serde import events
from layerfill.serde.codec import EventCodec
from layerfill.state import ScanState
from tests.support.stages import processed
from tests.unit.test_scanner_clair import FakeClair, Scripted, closed_port_url, running_fake_clair

pytestmark = pytest.mark.unit

REGISTRY = "cache.example:5000"
AMD = "sha256:" + "1" * 64
ARM = "sha256:" + "2" * 64
INDEX = "sha256:" + "9" * 64
CVE = {"7": {"name": "CVE-2024-0727", "normalized_severity": "Unknown"}}
codec = EventCodec()


def settings(clair_url: str, tmp_path: Path, **scanner: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"log_level": "0"}),
        scanner=ScannerSettings(
            clair_url=clair_url, attempts_in_process=2, retry_delays_s=[5.0], health_port=None, **scanner
        ),
        state={"database_url": f"sqlite:///{tmp_path / 'state.db'}"},
        routes=[
            Route(registry=REGISTRY, upstream_url="https://up.example", sink="registry", proxy_url="http://proxy:5000")
        ],
    )


@pytest.fixture
def clair() -> Iterator[FakeClair]:
    with running_fake_clair() as fake:
        yield fake


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Any]:
    made: list[ScannerService] = []

    def make(clair_url: str, **scanner: Any) -> ScannerService:
        svc = ScannerService(settings(clair_url, tmp_path, **scanner), codec=codec)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.pool.shutdown()
        svc.state.close()


def cached_manifest(digest: str, config_type: str = mt.OCI_CONFIG) -> dict[str, Any]:
    return events.cached_manifest(
        digest=digest,
        media_type=mt.OCI_MANIFEST,
        config=events.blob_ref("sha256:" + "c" * 64, 100, config_type),
        layers=[events.blob_ref("sha256:" + "d" * 64, 1000, mt.OCI_LAYER_GZIP)],
    )


def image_cached(manifests: list[dict[str, Any]], caused_by: str = "pull-1", repository: str = "demo/app") -> dict:
    return events.image_cached(
        caused_by=caused_by, registry=REGISTRY, repository=repository, digest=manifests[0]["digest"],
        media_type=mt.OCI_MANIFEST, manifests=manifests, total_bytes=1, fetched_bytes=0, started_at=events.utc_now(),
    )  # fmt: skip


def message(ev: dict[str, Any], *, topic: str = "layerfill.image-cached", offset: int = 0, headers=None) -> Message:
    value = codec.encode("ImageCached", ev, topic)
    return Message(topic=topic, partition=0, offset=offset, key=b"k", value=value, headers=headers or [])


def commit(out: Outcome) -> list[tuple[str, dict[str, Any] | None, dict[str, bytes]]]:
    """What the loop does after a successful commit; the records, decoded where they are ImageScanned."""
    if out.after_commit:
        out.after_commit()
    decoded = []
    for r in out.records:
        value = codec.decode(r.value)[1] if r.topic == "layerfill.image-scanned" else None
        decoded.append((r.topic, value, dict(r.headers)))
    return decoded


def test_scan_emits_image_scanned_and_records_it_once_committed(clair: FakeClair, make_service) -> None:
    clair.vulnerabilities = CVE
    svc = make_service(clair.url)
    ev = image_cached([cached_manifest(AMD)])
    [out] = processed(svc, [message(ev)])
    assert out.label == "scanned"
    assert svc.state.scan_for(REGISTRY, AMD).state is ScanState.PENDING  # not committed yet
    [(topic, scanned, headers)] = commit(out)
    assert topic == "layerfill.image-scanned" and headers["layerfill.caused_by"] == ev["event_id"].encode()
    assert scanned["state"] == "indexed" and scanned["digest"] == AMD and scanned["packages"] == 2
    assert scanned["vulnerabilities"]["unknown"] == 1 and scanned["caused_by"] == ev["event_id"]
    assert scanned["report_uri"] == f"{clair.url}/matcher/api/v1/vulnerability_report/{AMD}"
    row = svc.state.scan_for(REGISTRY, AMD)
    assert (row.state, row.package_count, row.vulnerabilities["unknown"], row.attempts) == (ScanState.INDEXED, 2, 1, 1)
    # Clair was asked for the layer through the proxy of the registry sink's route.
    assert clair.posts[0]["layers"][0]["uri"] == f"http://proxy:5000/v2/demo/app/blobs/sha256:{'d' * 64}"


def test_a_repeated_image_cached_does_not_rescan_unless_asked(clair: FakeClair, make_service) -> None:
    svc = make_service(clair.url)
    commit(processed(svc, [message(image_cached([cached_manifest(AMD)]))])[0])
    # The same content pulled again, in another repository of the registry: already scanned.
    [again] = processed(
        svc, [message(image_cached([cached_manifest(AMD)], caused_by="pull-2", repository="other/app"))]
    )
    assert again.label == "already_scanned" and again.records == []
    assert again.quiet  # nothing to commit but the offset: the loop may batch it with later ones
    assert len(clair.posts) == 1
    rescanning = make_service(clair.url, rescan=True)
    [out] = processed(rescanning, [message(image_cached([cached_manifest(AMD)], caused_by="pull-3"))])
    assert out.label == "scanned" and len(clair.posts) == 2


def test_vulnerabilities_count_once_per_manifest_not_again_on_a_rescan(clair: FakeClair, make_service) -> None:
    from prometheus_client import REGISTRY

    def counted() -> float:
        return REGISTRY.get_sample_value("layerfill_scanner_new_vulnerabilities_total", {"severity": "unknown"}) or 0

    clair.vulnerabilities = CVE
    before = counted()
    svc = make_service(clair.url)
    commit(processed(svc, [message(image_cached([cached_manifest(AMD)]))])[0])
    assert counted() == before + 1
    # A replay that rescans every manifest records a fresh report but finds nothing new to count.
    rescanning = make_service(clair.url, rescan=True)
    [out] = processed(rescanning, [message(image_cached([cached_manifest(AMD)], caused_by="pull-2"))])
    assert out.label == "scanned"
    commit(out)
    assert len(clair.posts) == 2 and counted() == before + 1
    # Another manifest's first report counts.
    commit(processed(rescanning, [message(image_cached([cached_manifest(ARM)], caused_by="pull-3"))])[0])
    assert counted() == before + 2


def test_duplicates_in_one_batch_are_scanned_once(clair: FakeClair, make_service) -> None:
    svc = make_service(clair.url)
    ev = image_cached([cached_manifest(AMD)])
    outs = processed(svc, [message(ev, offset=1), message(ev, offset=2)])
    assert [o.label for o in outs] == ["scanned", "duplicate_in_batch"]
    assert len(clair.posts) == 1


def test_clair_down_reschedules_on_the_retry_topic(tmp_path: Path, make_service) -> None:
    svc = make_service(closed_port_url())
    before = int(time.time() * 1000)
    [out] = processed(svc, [message(image_cached([cached_manifest(AMD)]))])
    assert out.label == "retried"
    [(topic, _, headers)] = commit(out)
    assert topic == "layerfill.image-cached.retry"
    assert headers[ATTEMPT] == b"1" and int(headers[DUE_MS]) >= before + 4000
    row = svc.state.scan_for(REGISTRY, AMD)
    assert row.state is ScanState.PENDING and "retry 1 queued: ClairUnavailable" in row.error


def test_after_the_last_retry_the_event_is_dead_lettered_unchanged(make_service) -> None:
    svc = make_service(closed_port_url())
    m = message(image_cached([cached_manifest(AMD)]), topic="layerfill.image-cached.retry",
                headers=[(ATTEMPT, b"1"), (DUE_MS, b"0")])  # fmt: skip
    [out] = processed(svc, [m])
    assert out.label == "dead_lettered"
    [rec] = out.records
    headers = dict(rec.headers)
    assert rec.topic == "layerfill.dlq" and rec.value == m.value()
    assert headers["layerfill.dlq.stage"] == b"scanner"
    assert headers["layerfill.dlq.error.class"] == b"ClairUnavailable"
    assert headers["layerfill.dlq.attempts"] == b"3"
    assert headers["layerfill.dlq.original.topic"] == b"layerfill.image-cached.retry"


def test_index_error_is_retried_in_process_then_recorded(clair: FakeClair, make_service) -> None:
    clair.script.extend([Scripted(500, "layer fetch failed", stored_state="IndexError")] * 2)
    svc = make_service(clair.url)
    [out] = processed(svc, [message(image_cached([cached_manifest(AMD)]))])
    [(_, scanned, _)] = commit(out)
    assert len(clair.posts) == 2
    assert scanned["state"] == "index_error" and "layer fetch failed" in scanned["error"]
    assert scanned["packages"] is None and scanned["vulnerabilities"] is None
    assert svc.state.scan_for(REGISTRY, AMD).state is ScanState.INDEX_ERROR


def test_index_error_then_success_records_the_success(clair: FakeClair, make_service) -> None:
    clair.script.append(Scripted(500, "layer fetch failed", stored_state="IndexError"))
    svc = make_service(clair.url)
    [(_, scanned, _)] = commit(processed(svc, [message(image_cached([cached_manifest(AMD)]))])[0])
    assert scanned["state"] == "indexed"


def test_what_clair_cannot_index_is_unsupported_without_asking(clair: FakeClair, make_service) -> None:
    svc = make_service(clair.url)
    ev = image_cached([cached_manifest(AMD, "application/vnd.cncf.helm.config.v1+json")])
    [(_, scanned, _)] = commit(processed(svc, [message(ev)])[0])
    assert scanned["state"] == "unsupported" and "not a container image config" in scanned["error"]
    assert clair.posts == []


def test_what_clair_refuses_is_unsupported_with_clairs_message(clair: FakeClair, make_service) -> None:
    clair.script.append(Scripted(400, "failed to start scan: tarfs: format error"))
    svc = make_service(clair.url)
    [(_, scanned, _)] = commit(processed(svc, [message(image_cached([cached_manifest(AMD)]))])[0])
    assert scanned["state"] == "unsupported" and "tarfs: format error" in scanned["error"]


def test_undecodable_records_and_unrouted_events_are_dead_lettered(clair: FakeClair, make_service) -> None:
    svc = make_service(clair.url)
    garbage = Message(topic="layerfill.image-cached", partition=0, offset=3, key=None, value=b"\x00junk")
    ev = image_cached([cached_manifest(AMD)])
    ev["registry"] = "elsewhere.example"
    outs = processed(svc, [garbage, message(ev)])
    assert [o.label for o in outs] == ["dead_lettered", "dead_lettered"]
    assert dict(outs[1].records[0].headers)["layerfill.dlq.error.class"] == b"NoRoute"
    assert clair.posts == []


def test_an_index_keeps_finished_children_when_a_later_one_must_wait(clair: FakeClair, make_service) -> None:
    # The second child's index fails with Clair answering 503 twice (both in-process attempts).
    svc = make_service(clair.url)
    ev = image_cached([cached_manifest(AMD), cached_manifest(ARM)])
    ev["digest"] = INDEX
    clair.script.extend([Scripted(201, stored_state="IndexFinished"), Scripted(503, "busy"), Scripted(503, "busy")])
    [out] = processed(svc, [message(ev)])
    assert out.label == "retried"
    records = commit(out)
    assert [(t, v and v["digest"]) for t, v, _ in records] == [
        ("layerfill.image-scanned", AMD),
        ("layerfill.image-cached.retry", None),
    ]
    assert svc.state.scan_for(REGISTRY, AMD).state is ScanState.INDEXED
    assert svc.state.scan_for(REGISTRY, ARM).state is ScanState.PENDING
    # The retried event scans only what is left.
    retry = message(ev, topic="layerfill.image-cached.retry", headers=[(ATTEMPT, b"1"), (DUE_MS, b"0")])
    [(_, scanned, _)] = commit(processed(svc, [retry])[0])
    assert scanned["digest"] == ARM and scanned["state"] == "indexed"
    assert svc.state.scan_for(REGISTRY, ARM).attempts == 2

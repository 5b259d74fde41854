"""The bridge's HTTP contract, against the Starlette app with the real Publisher and codec and a recording
Kafka: 2xx only after every event is acknowledged, 401/413/415/400 for bad requests, 503 when Kafka is down."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from layerfill.config.settings import BridgeSettings
from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.oci import mediatypes
from layerfill.producers.publisher import MAX_DEAD_LETTER_BYTES
from layerfill.serde.codec import EventCodec
from tests.support.notifications import V1, V2, distribution_event, envelope, fake_digest, harbor_pull
from tests.unit.bridge_support import (
    DIST,
    DLQ_TOPIC,
    HARBOR,
    MAX_BODY,
    PULLED_TOPIC,
    TOKEN,
    headers,
    make_app,
    make_client,
    raw_asgi_post,
)

pytestmark = pytest.mark.unit

CODEC = EventCodec()


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def bridge():
    app, producer = make_app()
    with make_client(app) as client:
        yield client, producer


@pytest.mark.parametrize("content_type", [V1, V2, "application/json", V2 + "; charset=utf-8", V2.upper()])
def test_a_manifest_pull_is_published_and_acknowledged(bridge, content_type: str) -> None:
    client, producer = bridge
    raw = distribution_event(repository="team/app", tag="1", host="cache.example:5000")
    resp = client.post(DIST, content=envelope(raw), headers=headers(content_type))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["published"] == 1 and body["dead_lettered"] == 0
    (rec,) = producer.on(PULLED_TOPIC)
    assert rec.key == b"cache.example:5000/team/app"
    record, value = CODEC.decode(rec.value)
    assert record == "ManifestPulled"
    assert value["event_id"] == body["event_ids"][0] == dict(rec.headers)["layerfill.event_id"].decode()
    assert (value["registry"], value["repository"], value["reference"], value["digest"]) == (
        "cache.example:5000",
        "team/app",
        "1",
        raw["target"]["digest"],
    )
    assert value["source"] == "distribution" and value["media_type"] == mediatypes.OCI_MANIFEST


def test_blob_events_and_other_actions_are_acknowledged_and_counted(bridge) -> None:
    client, producer = bridge
    blobs_before = _metric("layerfill_bridge_events_total", source="distribution", outcome="ignored_blob")
    push_before = _metric("layerfill_bridge_events_total", source="distribution", outcome="ignored_action")
    body = envelope(
        distribution_event(media_type="application/octet-stream"),
        distribution_event(media_type="application/octet-stream"),
        distribution_event(action="push"),
    )
    resp = client.post(DIST, content=body, headers=headers())
    assert resp.status_code == 200
    assert resp.json()["ignored"] == {"blob": 2, "action:push": 1}
    assert producer.sent == []
    assert _metric("layerfill_bridge_events_total", source="distribution", outcome="ignored_blob") == blobs_before + 2
    assert _metric("layerfill_bridge_events_total", source="distribution", outcome="ignored_action") == push_before + 1


def test_an_invalid_event_is_dead_lettered_and_the_rest_published(bridge) -> None:
    client, producer = bridge
    bad = distribution_event(repository="Not/Valid")
    good = distribution_event(repository="ok/repo")
    resp = client.post(DIST, content=envelope(bad, good), headers=headers())
    # 2xx: a 4xx would make the registry retry this batch forever.
    assert resp.status_code == 200
    assert resp.json()["published"] == 1 and resp.json()["dead_lettered"] == 1
    (dead,) = producer.on(DLQ_TOPIC)
    assert json.loads(dead.value) == bad
    info = parse_dlq_headers(dead.headers)
    assert info["stage"] == "bridge" and info["error.class"] == "InvalidEvent"
    assert "target.repository" in info["error.message"]
    assert [CODEC.decode(r.value)[1]["repository"] for r in producer.on(PULLED_TOPIC)] == ["ok/repo"]


def test_a_huge_invalid_event_is_dead_lettered_truncated() -> None:
    """The default body limit is above Kafka's default message.max.bytes (1,000,000): the dead letter of
    one event that fills the body must still fit in a record."""
    limit = BridgeSettings().max_body_bytes
    app, producer = make_app(max_body=limit)
    bad = distribution_event(repository="x" * 510_000)  # the repository appears twice (target.url)
    body = json.dumps({"events": [bad]}).encode()
    assert 1_000_000 < len(body) <= limit
    with make_client(app) as client:
        resp = client.post(DIST, content=body, headers=headers())
    assert resp.status_code == 200
    (dead,) = producer.on(DLQ_TOPIC)
    assert len(dead.value) == MAX_DEAD_LETTER_BYTES
    assert int(parse_dlq_headers(dead.headers)["truncated.from.bytes"]) > MAX_DEAD_LETTER_BYTES
    assert len(parse_dlq_headers(dead.headers)["error.message"]) <= 4000


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": TOKEN[:-1]},
        {"x-layerfill-token": "wrong"},
        {"authorization": ""},
    ],
)
def test_missing_or_wrong_token_is_401_and_nothing_is_published(bridge, auth: dict) -> None:
    client, producer = bridge
    h = headers(token=None) | auth
    for path, body in ((DIST, envelope(distribution_event())), (HARBOR, json.dumps(harbor_pull()).encode())):
        resp = client.post(path, content=body, headers=h)
        assert resp.status_code == 401, (path, auth)
    assert producer.sent == []


@pytest.mark.parametrize(
    "auth",
    [
        {"authorization": f"Bearer {TOKEN}"},
        {"authorization": f"bearer {TOKEN}"},
        {"authorization": TOKEN},  # Harbor sends its auth header value as is
        {"x-layerfill-token": TOKEN},
    ],
)
def test_the_token_is_accepted_in_each_documented_form(bridge, auth: dict) -> None:
    client, _ = bridge
    resp = client.post(DIST, content=envelope(distribution_event()), headers=headers(token=None) | auth)
    assert resp.status_code == 200


def test_without_a_configured_token_no_auth_is_needed() -> None:
    app, producer = make_app(token=None)
    with make_client(app) as client:
        resp = client.post(DIST, content=envelope(distribution_event()), headers=headers(token=None))
    assert resp.status_code == 200 and len(producer.sent) == 1


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/xml",
        "application/vnd.docker.distribution.events.v3+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ],
)
def test_unknown_content_types_are_415(bridge, content_type: str | None) -> None:
    client, producer = bridge
    h = headers()
    if content_type is None:
        del h["content-type"]
    else:
        h["content-type"] = content_type
    resp = client.post(DIST, content=envelope(distribution_event()), headers=h)
    assert resp.status_code == 415
    assert "unsupported content type" in resp.json()["error"]
    assert producer.sent == []


def test_a_body_over_the_limit_is_413(bridge) -> None:
    client, producer = bridge
    big = envelope(distribution_event(event_id="x" * MAX_BODY))
    assert len(big) > MAX_BODY
    assert client.post(DIST, content=big, headers=headers()).status_code == 413
    assert producer.sent == []


def test_a_streamed_body_without_content_length_over_the_limit_is_413(bridge) -> None:
    client, _ = bridge

    def chunks():
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    resp = client.post(DIST, content=chunks(), headers=headers())
    assert resp.status_code == 413


def test_a_lying_small_content_length_does_not_lift_the_limit() -> None:
    app, producer = make_app()
    body = b" " * (MAX_BODY + 1)
    h = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {TOKEN}".encode())]
    assert raw_asgi_post(app, DIST, [*h, (b"content-length", b"10")], body) == 413
    assert producer.sent == []


def test_a_body_at_the_limit_is_read() -> None:
    app, producer = make_app()
    body = envelope(distribution_event())
    body = body + b" " * (MAX_BODY - len(body))
    with make_client(app) as client:
        assert client.post(DIST, content=body, headers=headers()).status_code == 200
    assert len(producer.sent) == 1


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9\xb9", b"-1", b"1e9", b"", b" 12", b"99999999999999999999999"])
def test_a_garbage_content_length_header_is_not_a_crash(value: bytes) -> None:
    app, _ = make_app()
    h = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {TOKEN}".encode())]
    status = raw_asgi_post(app, DIST, [*h, (b"content-length", value)], b'{"events": []}')
    assert status in (200, 413)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"events": [', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "'events' array"),
        (b'{"events": 3}', "'events' array"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(bridge, body: bytes, reason: str) -> None:
    client, producer = bridge
    resp = client.post(DIST, content=body, headers=headers())
    assert resp.status_code == 400
    assert reason in resp.json()["error"]
    assert producer.sent == []


@pytest.mark.parametrize("path", [DIST, HARBOR])
def test_a_body_that_is_not_utf8_is_400_naming_the_encoding(bridge, path: str) -> None:
    client, producer = bridge
    doc = {"events": [distribution_event(action="\ud800")]} if path == DIST else harbor_pull(event_type="\ud800")
    # Unescaped, a lone surrogate becomes bytes (ED A0 80) that are not UTF-8; no registry sends them.
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert b"\xed\xa0\x80" in body
    resp = client.post(path, content=body, headers=headers() if path == DIST else {"authorization": TOKEN})
    assert resp.status_code == 400
    assert "not UTF-8" in resp.json()["error"]
    assert producer.sent == []


def test_escaped_lone_surrogates_are_ignored_or_dead_lettered_never_a_5xx(bridge) -> None:
    """Valid JSON ("\\ud800" escapes) decoding to strings UTF-8 cannot encode: echoed back in the answer
    (an ignored action) and quoted in a dead letter's cause, both must still serialise."""
    client, producer = bridge
    push = distribution_event(action="\ud800")
    bad_repo = distribution_event(repository="team/\ud800", digest=fake_digest("bad"))
    good = distribution_event(repository="ok/repo")
    resp = client.post(DIST, content=envelope(push, bad_repo, good), headers=headers())
    assert resp.status_code == 200, resp.text
    assert resp.content.isascii()
    assert resp.json() == {
        "published": 1,
        "dead_lettered": 1,
        "ignored": {"action:\ud800": 1},
        "event_ids": resp.json()["event_ids"],
    }
    (dead,) = producer.on(DLQ_TOPIC)
    assert json.loads(dead.value)["target"]["repository"] == "team/\ud800"
    assert "target.repository" in parse_dlq_headers(dead.headers)["error.message"]
    harbor_doc = json.dumps(harbor_pull(event_type="\ud800")).encode()
    assert b"\\ud800" in harbor_doc
    resp = client.post(HARBOR, content=harbor_doc, headers={"authorization": TOKEN})
    assert resp.status_code == 200 and resp.json()["ignored"] == {"type:\ud800": 1}


def test_kafka_unavailable_is_503_with_retry_after(bridge) -> None:
    client, producer = bridge
    producer.unavailable = True
    before = _metric("layerfill_bridge_requests_total", endpoint="distribution", code="503")
    resp = client.post(DIST, content=envelope(distribution_event()), headers=headers())
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "5"
    assert "Kafka unavailable" in resp.json()["error"]
    assert _metric("layerfill_bridge_requests_total", endpoint="distribution", code="503") == before + 1
    assert producer.sent == []


def test_redelivery_after_503_publishes_the_same_event_id(bridge) -> None:
    client, producer = bridge
    body = envelope(distribution_event())
    producer.unavailable = True
    assert client.post(DIST, content=body, headers=headers()).status_code == 503
    producer.unavailable = False
    first = client.post(DIST, content=body, headers=headers()).json()["event_ids"]
    second = client.post(DIST, content=body, headers=headers()).json()["event_ids"]
    assert first == second
    assert [CODEC.decode(r.value)[1]["event_id"] for r in producer.sent] == first + second


def test_a_parser_bug_is_a_400_not_a_5xx(bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    from layerfill.producers import distribution

    def broken(body: bytes, registry_name: str | None) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(distribution, "parse_envelope", broken)
    app, _ = make_app()
    with make_client(app) as client:
        resp = client.post(DIST, content=envelope(distribution_event()), headers=headers())
    assert resp.status_code == 400 and "RuntimeError" in resp.json()["error"]


def test_harbor_pull_artifact_is_published(bridge) -> None:
    client, producer = bridge
    doc = harbor_pull(project="proxy", name="library/debian", tag="12", host="harbor.example")
    resp = client.post(HARBOR, content=json.dumps(doc).encode(), headers={"authorization": TOKEN})
    assert resp.status_code == 200 and resp.json()["published"] == 1
    (rec,) = producer.on(PULLED_TOPIC)
    assert rec.key == b"harbor.example/proxy/library/debian"
    value = CODEC.decode(rec.value)[1]
    assert (value["source"], value["reference"]) == ("harbor", "12")


def test_harbor_other_types_are_ignored_and_malformed_is_400(bridge) -> None:
    client, producer = bridge
    push = json.dumps(harbor_pull(event_type="PUSH_ARTIFACT")).encode()
    resp = client.post(HARBOR, content=push, headers={"authorization": TOKEN})
    assert resp.status_code == 200 and resp.json()["ignored"] == {"type:PUSH_ARTIFACT": 1}
    resp = client.post(HARBOR, content=b'{"type": "PULL_ARTIFACT"}', headers={"authorization": TOKEN})
    assert resp.status_code == 400 and "event_data.resources" in resp.json()["error"]
    assert producer.sent == []


def test_registry_name_setting_names_the_events() -> None:
    app, producer = make_app(registry_name="cache.example.com")
    with make_client(app) as client:
        client.post(DIST, content=envelope(distribution_event(host="10.0.0.1:5000")), headers=headers())
    assert CODEC.decode(producer.sent[0].value)[1]["registry"] == "cache.example.com"


def test_metrics_and_health_endpoints(bridge) -> None:
    client, _ = bridge
    client.post(DIST, content=envelope(distribution_event()), headers=headers())
    assert client.get("/healthz").text == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'layerfill_bridge_requests_total{code="200",endpoint="distribution"}' in metrics.text
    assert "layerfill_bridge_publish_seconds_bucket" in metrics.text


def test_only_post_is_routed(bridge) -> None:
    client, _ = bridge
    assert client.get(DIST).status_code == 405
    assert client.post("/v1/notifications/other", content=b"{}", headers=headers()).status_code == 404


def test_shutdown_closes_the_publisher_once_after_serving() -> None:
    app, producer = make_app()
    with make_client(app) as client:
        assert client.post(DIST, content=envelope(distribution_event()), headers=headers()).status_code == 200
        assert producer.closed == 0
    assert producer.closed == 1

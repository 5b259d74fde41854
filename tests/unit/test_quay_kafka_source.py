"""The Kafka source's handling of one record (no Kafka needed: the loop is not run): a pull becomes a
ManifestPulled record exactly as the bridge's, the same entry twice is the same event, bad entries become
dead letters naming the cause, nothing raises. Plus which organizations and pullers the routes imply."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from layerfill.config.routes import Route
from layerfill.config.settings import QuayLogsSettings, Settings
from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.producers.quay.kafka_source import KafkaLogHandler
from layerfill.producers.quay.pulls import filters_for
from layerfill.serde.codec import EventCodec
from tests.unit.test_quay_entry import DIGEST, KINDS, kafka_raw

pytestmark = pytest.mark.unit

QUAY = "quay.example:8443"


def settings(**quay: object) -> Settings:
    route = Route(registry=QUAY, repository_prefix="cache", upstream_url="https://up.example", sink="registry",
                  proxy_url=f"https://{QUAY}", proxy_username="cache+layerfill", proxy_password=SecretStr("t"))  # fmt: skip
    cfg = QuayLogsSettings(quay_url=f"https://{QUAY}", kinds=KINDS, health_port=None, **quay)  # type: ignore[arg-type]
    return Settings(routes=[route], quay_logs=cfg)


class Msg:
    def __init__(self, value: bytes, offset: int = 5) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "quay.logs"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return self._offset


def test_the_routes_name_the_organizations_and_layerfills_robot() -> None:
    f = filters_for(settings())
    assert set(f.organizations) == {"cache"} and set(f.ignore_users) == {"cache+layerfill"}
    assert set(filters_for(settings(organizations=["a", "b"], ignore_users=["ops"])).ignore_users) == {
        "cache+layerfill",
        "ops",
    }
    with pytest.raises(ValueError, match="no organization to follow"):
        filters_for(settings(registry="other.example"))


def test_a_pull_is_published_like_the_bridge_and_a_redelivery_is_the_same_event() -> None:
    src = KafkaLogHandler(settings())
    value = json.dumps(kafka_raw(manifest_digest=DIGEST)).encode()
    first, again = src.one(Msg(value)), src.one(Msg(value, offset=9))
    assert first.label == again.label == "published"
    (rec,) = first.records
    assert rec.topic == "layerfill.manifest-pulled" and rec.key == f"{QUAY}/cache/demo/app-b".encode()
    ev = EventCodec().decode(rec.value)[1]
    assert (ev["source"], ev["registry"], ev["repository"], ev["digest"]) == ("quay", QUAY, "cache/demo/app-b", DIGEST)
    assert ev["event_id"] == EventCodec().decode(again.records[0].value)[1]["event_id"]
    assert dict(rec.headers)["layerfill.source"] == b"quay"


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        (b"\xff not json", "not JSON"),
        (json.dumps({**kafka_raw(tag="1"), "kind_id": 12345}).encode(), "logentrykind"),
        (json.dumps(kafka_raw(manifest_digest="sha256:xyz")).encode(), "manifest_digest"),
    ],
)
def test_bad_entries_are_dead_lettered_with_their_cause(value: bytes, cause: str) -> None:
    out = KafkaLogHandler(settings()).one(Msg(value))
    (rec,) = out.records
    assert out.label == "dead" and rec.topic == "layerfill.dlq" and rec.value == value
    h = parse_dlq_headers(rec.headers)
    assert h["stage"] == "quay-logs" and cause in h["error.message"]
    assert (h["original.topic"], h["original.partition"], h["original.offset"]) == ("quay.logs", "1", "5")


def test_skips_publish_nothing() -> None:
    src = KafkaLogHandler(settings())
    own = json.dumps(kafka_raw(manifest_digest=DIGEST, username="cache+layerfill")).encode()
    push = json.dumps({**kafka_raw(manifest_digest=DIGEST), "kind_id": 42}).encode()
    assert [(o.label, o.records) for o in (src.one(Msg(own)), src.one(Msg(push)))] == [("skipped", [])] * 2

"""The library API (`Publisher.publish_manifest_pulled`) with a recording Kafka: the record it produces, and a
clear ValueError naming the field for every bad input, raised before anything reaches Kafka."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from layerfill.kafka.producer import KafkaUnavailable
from layerfill.oci import mediatypes
from layerfill.producers.publisher import Publisher
from layerfill.serde.codec import EventCodec
from tests.support.notifications import fake_digest
from tests.unit.bridge_support import PULLED_TOPIC, RecordingProducer, make_settings

pytestmark = pytest.mark.unit

CODEC = EventCodec()
DIGEST = fake_digest("lib")


@pytest.fixture
def publisher() -> tuple[Publisher, RecordingProducer]:
    producer = RecordingProducer()
    return Publisher(make_settings(), producer=producer, codec=CODEC), producer  # type: ignore[arg-type]


def test_publish_returns_after_ack_with_the_record(publisher) -> None:
    pub, producer = publisher
    when = datetime(2026, 11, 28, 4, 0, 0, 123000, tzinfo=UTC)
    delivered = pub.publish_manifest_pulled(
        registry="quay.example", repository="org/app", digest=DIGEST, reference="v1",
        media_type=mediatypes.OCI_INDEX, source="quay", occurred_at=when,
    )  # fmt: skip
    assert delivered.topic == PULLED_TOPIC
    (rec,) = producer.sent
    assert rec.key == b"quay.example/org/app"
    value = CODEC.decode(rec.value)[1]
    assert value == {
        "event_id": value["event_id"],
        "occurred_at": when,
        "source": "quay",
        "registry": "quay.example",
        "repository": "org/app",
        "reference": "v1",
        "digest": DIGEST,
        "media_type": mediatypes.OCI_INDEX,
        "manifest": None,
    }
    assert dict(rec.headers) == {
        "layerfill.event_id": value["event_id"].encode(),
        "layerfill.source": b"quay",
        "layerfill.digest": DIGEST.encode(),
    }


def test_event_id_is_deterministic_or_given(publisher) -> None:
    pub, producer = publisher
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(2):
        pub.publish_manifest_pulled(registry="r.example", repository="a/b", digest=DIGEST, occurred_at=when)
    pub.publish_manifest_pulled(registry="r.example", repository="a/b", digest=DIGEST, event_id="quay-log-42")
    ids = [CODEC.decode(r.value)[1]["event_id"] for r in producer.sent]
    assert ids[0] == ids[1] and ids[2] == "quay-log-42"


def test_manifest_bytes_that_hash_to_the_digest_are_carried(publisher) -> None:
    pub, producer = publisher
    body = b'{"schemaVersion": 2}'
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    pub.publish_manifest_pulled(registry="r.example", repository="a/b", digest=digest, manifest=body)
    assert CODEC.decode(producer.sent[0].value)[1]["manifest"] == body


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"registry": "bad host"}, "invalid registry"),
        ({"registry": ""}, "invalid registry"),
        ({"repository": "Org/App"}, "invalid repository"),
        ({"repository": "a//b"}, "invalid repository"),
        ({"digest": "sha256:1234"}, "invalid digest"),
        ({"digest": "latest"}, "invalid digest"),
        ({"reference": "-v1"}, "invalid reference"),
        ({"reference": "sha256:zz"}, "invalid reference"),
        ({"media_type": "text/plain"}, "invalid media_type"),
        ({"media_type": mediatypes.OCI_LAYER_GZIP}, "invalid media_type"),
        ({"manifest": b"not the manifest"}, "invalid manifest"),
        ({"source": "nope"}, "source must be one of"),
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at must be a timezone-aware"),
    ],
)
def test_invalid_input_raises_value_error_naming_the_field(publisher, override: dict, message: str) -> None:
    pub, producer = publisher
    kwargs = {"registry": "r.example", "repository": "a/b", "digest": DIGEST} | override
    with pytest.raises(ValueError, match=message):
        pub.publish_manifest_pulled(**kwargs)
    assert producer.sent == []


def test_kafka_unavailable_reaches_the_caller(publisher) -> None:
    pub, producer = publisher
    producer.unavailable = True
    with pytest.raises(KafkaUnavailable):
        pub.publish_manifest_pulled(registry="r.example", repository="a/b", digest=DIGEST)

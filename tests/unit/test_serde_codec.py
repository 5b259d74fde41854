from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerfill import schemas
from layerfill.serde import (
    EventCodec,
    InvalidEventError,
    MalformedBodyError,
    RegistryRejectedError,
    RegistryUnavailableError,
    SerdeError,
    TruncatedMessageError,
    UnknownFingerprintError,
    UnknownMagicError,
    UnknownRecordError,
    UnknownSchemaError,
    UnknownSchemaIdError,
)
from layerfill.serde import events as ev
from layerfill.serde.single_object import schema_fingerprint
from tests.unit.serde_support import FakeRegistryClient, event_values

pytestmark = pytest.mark.unit

RECORDS = schemas.schema_names()
DIGEST = "sha256:" + "ab" * 32
WHEN = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)


def _manifest_pulled(**overrides: Any) -> dict[str, Any]:
    value = ev.manifest_pulled(
        event_id=ev.event_id("manifest-pulled", "distribution", "n-1"),
        source="distribution",
        registry="cache.local:5000",
        repository="library/debian",
        digest=DIGEST,
        occurred_at=WHEN,
        reference="12",
        media_type="application/vnd.oci.image.manifest.v1+json",
        manifest=b'{"schemaVersion":2}',
    )
    value.update(overrides)
    return value


def _image_cached() -> dict[str, Any]:
    layer = ev.blob_ref("sha256:" + "cd" * 32, 1234, "application/vnd.oci.image.layer.v1.tar+gzip")
    return ev.image_cached(
        caused_by="cause",
        registry="cache.local:5000",
        repository="library/debian",
        digest=DIGEST,
        media_type="application/vnd.oci.image.index.v1+json",
        manifests=[
            ev.cached_manifest(
                digest="sha256:" + "ef" * 32,
                media_type="application/vnd.oci.image.manifest.v1+json",
                config=ev.blob_ref("sha256:" + "01" * 32, 10, "application/vnd.oci.image.config.v1+json"),
                layers=[layer],
                platform=ev.platform("linux", "arm64", "v8"),
            )
        ],
        total_bytes=1244,
        fetched_bytes=1234,
        started_at=WHEN,
        completed_at=WHEN,
    )


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


def _registry_pair() -> tuple[EventCodec, EventCodec, FakeRegistryClient]:
    # Separate producer and consumer codecs: the consumer must look the schema up by id.
    fake = FakeRegistryClient(first_id=41)
    return EventCodec(registry_client=fake), EventCodec(registry_client=fake), fake


@pytest.mark.parametrize("record", RECORDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_record_round_trips_single_object(codec: EventCodec, record: str, data: st.DataObject) -> None:
    value = data.draw(event_values(record))
    encoded = codec.encode(record, value, "any-topic")
    assert encoded[:2] == b"\xc3\x01"
    assert codec.decode(encoded) == (record, value)


@pytest.mark.parametrize("record", RECORDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_record_round_trips_confluent(record: str, data: st.DataObject) -> None:
    producer, consumer, _ = _registry_pair()
    value = data.draw(event_values(record))
    encoded = producer.encode(record, value, "layerfill.events")
    assert encoded[0] == 0
    assert consumer.decode(encoded) == (record, value)


def test_single_object_header_is_magic_plus_fingerprint_of_current_schema(codec: EventCodec) -> None:
    encoded = codec.encode("ManifestPulled", _manifest_pulled(), "t")
    assert codec.wire_format == "single-object"
    assert encoded[:2] == b"\xc3\x01"
    assert encoded[2:10] == schema_fingerprint(schemas.load_schema_json("ManifestPulled"))
    body = fastavro.schemaless_reader(io.BytesIO(encoded[10:]), schemas.load_schema("ManifestPulled"))
    assert body == _manifest_pulled()


def test_confluent_header_carries_the_registered_id_and_uses_topic_name_strategy() -> None:
    producer, consumer, fake = _registry_pair()
    assert producer.wire_format == "confluent"
    first = producer.encode("ManifestPulled", _manifest_pulled(), "layerfill.manifest-pulled")
    second = producer.encode("ImageCached", _image_cached(), "layerfill.image-cached")
    assert struct.unpack(">bI", first[:5]) == (0, 41)
    assert struct.unpack(">bI", second[:5]) == (0, 42)
    assert fake.subjects == {"layerfill.manifest-pulled-value": [41], "layerfill.image-cached-value": [42]}
    registered = json.loads(fake.schemas[41].schema_str)
    assert registered == schemas.load_schema_json("ManifestPulled")
    assert fake.schemas[41].schema_type == "AVRO"
    assert consumer.decode(first) == ("ManifestPulled", _manifest_pulled())


def test_registry_is_called_once_per_topic_and_once_per_id() -> None:
    producer, consumer, fake = _registry_pair()
    messages = [producer.encode("ManifestPulled", _manifest_pulled(), "t") for _ in range(5)]
    producer.encode("ManifestPulled", _manifest_pulled(), "other-topic")
    assert fake.register_calls == 2
    for message in messages:
        consumer.decode(message)
    assert fake.get_calls == 1


def test_every_decoder_reads_both_wire_formats(codec: EventCodec) -> None:
    producer, consumer, _ = _registry_pair()
    framed = producer.encode("ManifestPulled", _manifest_pulled(), "t")
    single = codec.encode("ManifestPulled", _manifest_pulled(), "t")
    assert consumer.decode(single) == consumer.decode(framed) == ("ManifestPulled", _manifest_pulled())
    with pytest.raises(UnknownSchemaIdError, match="no schema registry is configured"):
        codec.decode(framed)


def test_registry_writer_schema_is_resolved_to_the_current_reader() -> None:
    # An older producer registered ManifestPulled without `manifest` and with fewer sources.
    old = schemas.load_schema_json("ManifestPulled")
    old["fields"] = [f for f in old["fields"] if f["name"] != "manifest"]
    source = next(f for f in old["fields"] if f["name"] == "source")
    source["type"]["symbols"] = ["distribution", "harbor"]
    del source["type"]["default"]
    fake = FakeRegistryClient(first_id=7)
    schema_id = fake.register_schema("t-value", Schema(json.dumps(old), "AVRO"))
    value = {k: v for k, v in _manifest_pulled(source="harbor").items() if k != "manifest"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), value)
    message = struct.pack(">bI", 0, schema_id) + body.getvalue()

    record, decoded = EventCodec(registry_client=fake).decode(message)

    assert record == "ManifestPulled"
    assert decoded == {**value, "manifest": None}


def test_released_single_object_data_decodes(codec: EventCodec) -> None:
    newest = schemas.released_versions()[-1]
    writer = schemas.load_released(newest, "ManifestPulled")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, writer, _manifest_pulled())
    message = b"\xc3\x01" + schema_fingerprint(writer) + body.getvalue()
    assert codec.decode(message) == ("ManifestPulled", _manifest_pulled())


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"", TruncatedMessageError, "empty"),
        (None, TruncatedMessageError, "empty"),
        (b"\x01\x02\x03", UnknownMagicError, "0102"),
        (b'{"json": true}', UnknownMagicError, "neither"),
        (b"\xc3\x02" + bytes(8), UnknownMagicError, "c302"),
        (b"\xc3\x01\x00\x00", TruncatedMessageError, "header"),
        (b"\x00\x00\x00", TruncatedMessageError, "header"),
        (b"\xc3\x01" + bytes(8) + b"\x00", UnknownFingerprintError, "0000000000000000"),
    ],
)
def test_decoder_rejects_garbage(codec: EventCodec, data: bytes | None, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        codec.decode(data)


def test_unknown_registry_id_is_a_serde_error() -> None:
    _, consumer, _ = _registry_pair()
    with pytest.raises(UnknownSchemaIdError, match="schema id 99: not found"):
        consumer.decode(struct.pack(">bI", 0, 99) + b"\x00")


def test_every_truncation_of_a_message_is_rejected(codec: EventCodec) -> None:
    message = codec.encode("ImageCached", _image_cached(), "t")
    for cut in range(len(message)):
        with pytest.raises(SerdeError):
            codec.decode(message[:cut])
    with pytest.raises(TruncatedMessageError, match="body ends early"):
        codec.decode(message[:-1])


def test_trailing_bytes_are_rejected(codec: EventCodec) -> None:
    message = codec.encode("ManifestPulled", _manifest_pulled(), "t")
    with pytest.raises(MalformedBodyError, match="1 trailing byte"):
        codec.decode(message + b"\x00")


def test_out_of_range_enum_index_is_malformed(codec: EventCodec) -> None:
    value = _manifest_pulled()
    good = codec.encode("ManifestPulled", value, "t")
    # The body starts event_id, occurred_at, then the `source` enum index.
    prefix_schema = {
        "type": "record",
        "name": "Prefix",
        "fields": [{"name": "event_id", "type": "string"}, {"name": "occurred_at", "type": "long"}],
    }
    prefix = io.BytesIO()
    fastavro.schemaless_writer(prefix, prefix_schema, {"event_id": value["event_id"], "occurred_at": 0})
    at = 10 + len(prefix.getvalue()) - 1 + len(_zigzag(int(WHEN.timestamp() * 1000)))
    assert good[at] == 0  # "distribution" is symbol 0
    bad = good[:at] + _zigzag(100) + good[at + 1 :]
    with pytest.raises(MalformedBodyError, match="IndexError"):
        codec.decode(bad)


def _zigzag(n: int) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("value", "field", "match"),
    [
        (_manifest_pulled(source="zot"), "source", "one of distribution, harbor"),
        ({k: v for k, v in _manifest_pulled().items() if k != "digest"}, "digest", "None is not a string"),
        (_manifest_pulled(occurred_at="yesterday"), "occurred_at", "timestamp-millis"),
        (_manifest_pulled(manifest="text, not bytes"), "manifest", "text, not bytes"),
        (_manifest_pulled(tag="12"), "tag", "not a field of the schema"),
    ],
)
def test_invalid_values_name_the_field(codec: EventCodec, value: dict[str, Any], field: str, match: str) -> None:
    with pytest.raises(InvalidEventError, match=match) as caught:
        codec.encode("ManifestPulled", value, "t")
    assert caught.value.field == field
    assert caught.value.record == "ManifestPulled"
    assert f"field {field}" in str(caught.value)


def test_invalid_nested_value_names_the_nested_field(codec: EventCodec) -> None:
    value = _image_cached()
    value["manifests"][0]["config"]["size"] = "big"
    with pytest.raises(InvalidEventError, match=r"field BlobRef\.size: 'big' is not a long"):
        codec.encode("ImageCached", value, "t")


def test_unknown_nested_key_is_rejected_naming_it(codec: EventCodec) -> None:
    value = _image_cached()
    value["manifests"][0]["platform"]["os_version"] = "10.0"
    with pytest.raises(InvalidEventError, match="field os_version: not a field of the schema"):
        codec.encode("ImageCached", value, "t")


def test_non_mapping_value_and_unknown_record_are_rejected(codec: EventCodec) -> None:
    with pytest.raises(InvalidEventError, match="expected a mapping, got list"):
        codec.encode("ManifestPulled", [], "t")  # type: ignore[arg-type]
    with pytest.raises(UnknownRecordError, match="'Nope'"):
        codec.encode("Nope", {}, "t")


class _FailingRegistry(FakeRegistryClient):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def register_schema(self, subject_name: str, schema: Schema, normalize_schemas: bool = False) -> int:
        raise self.error

    def get_schema(self, schema_id: int, subject_name: str | None = None, fmt: str | None = None) -> Schema:
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SchemaRegistryError(503, 50301, "down"), RegistryUnavailableError),
        (ConnectionRefusedError(111, "Connection refused"), RegistryUnavailableError),
        (SchemaRegistryError(409, 409, "incompatible"), RegistryRejectedError),
    ],
)
def test_registration_failures_are_registry_errors_not_serde_errors(error: Exception, expected: type) -> None:
    codec = EventCodec(registry_client=_FailingRegistry(error))
    with pytest.raises(expected) as caught:
        codec.encode("ManifestPulled", _manifest_pulled(), "t")
    assert not isinstance(caught.value, SerdeError)


def test_registry_outage_on_lookup_is_retryable_not_a_serde_error() -> None:
    codec = EventCodec(registry_client=_FailingRegistry(SchemaRegistryError(500, 50001, "boom")))
    with pytest.raises(RegistryUnavailableError):
        codec.decode(struct.pack(">bI", 0, 5) + b"\x00")


@pytest.mark.parametrize(
    ("schema", "error", "match"),
    [
        (Schema('{"type":"record","name":"Other","fields":[]}', "AVRO"), UnknownRecordError, "Other"),
        (Schema('{"type": "object"}', "JSON"), UnknownSchemaIdError, "JSON schema, not Avro"),
        (Schema("{not json", "AVRO"), UnknownSchemaIdError, "unparsable"),
        (Schema('{"type":"nosuchtype"}', "AVRO"), UnknownSchemaError, "not valid Avro"),
        (Schema('"string"', "AVRO"), UnknownRecordError, "unknown event record"),
    ],
)
def test_registry_schemas_that_are_not_our_events_are_serde_errors(schema: Schema, error: type, match: str) -> None:
    fake = FakeRegistryClient()
    fake.schemas[3] = schema
    with pytest.raises(error, match=match):
        EventCodec(registry_client=fake).decode(struct.pack(">bI", 0, 3) + b"\x00")

"""The typed records (layerfill.serde.records) stay in step with schemas/*.avsc: every record of every schema has
a class with the same field names in the same order, the same types and the same defaults; and a record's
bytes on the wire are those of the dict it replaces."""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, datetime
from typing import Any

import pytest

from layerfill import schemas
from layerfill.serde import events, records
from layerfill.serde.codec import EventCodec

pytestmark = pytest.mark.unit

PRIMITIVES = {"string": str, "long": int, "int": int, "bytes": bytes}
WHEN = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def named_records(schema: Any, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every record schema inside `schema`, by name."""
    if isinstance(schema, list):
        for s in schema:
            named_records(s, found)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            found[schema["name"]] = schema
            for f in schema["fields"]:
                named_records(f["type"], found)
        elif schema.get("type") == "array":
            named_records(schema["items"], found)
    return found


def python_type(avro: Any) -> Any:
    """The Python type a record class must declare for Avro type `avro`."""
    if isinstance(avro, list):
        [other] = [t for t in avro if t != "null"]
        assert "null" in avro
        return python_type(other) | None
    if isinstance(avro, str):
        return PRIMITIVES[avro] if avro in PRIMITIVES else records.BY_NAME[avro]
    if avro.get("logicalType") == "timestamp-millis":
        return datetime
    kind = avro["type"]
    if kind == "enum":
        return str
    if kind == "record":
        return records.BY_NAME[avro["name"]]
    if kind == "array":
        return tuple[python_type(avro["items"]), ...]
    return PRIMITIVES[kind]


def same_type(declared: Any, expected: Any) -> bool:
    if isinstance(expected, types.UnionType) or isinstance(declared, types.UnionType):
        return set(typing.get_args(declared)) == set(typing.get_args(expected))
    return declared == expected


ALL_RECORDS = {name: s for event in schemas.schema_names() for name, s in
               named_records(schemas.load_schema_json(event), {}).items()}  # fmt: skip


def test_every_record_of_the_schemas_has_a_class_and_no_class_is_extra() -> None:
    assert set(ALL_RECORDS) == set(records.BY_NAME)
    assert {c.RECORD for c in records.EVENTS} == set(schemas.schema_names())


@pytest.mark.parametrize("name", sorted(ALL_RECORDS))
def test_fields_types_and_defaults_match_the_schema(name: str) -> None:
    schema, cls = ALL_RECORDS[name], records.BY_NAME[name]
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields] == [f["name"] for f in schema["fields"]]
    hints = typing.get_type_hints(cls)
    for f, avro in zip(fields, schema["fields"], strict=True):
        assert same_type(hints[f.name], python_type(avro["type"])), f"{name}.{f.name}: {hints[f.name]}"
        expected = avro.get("default", dataclasses.MISSING)
        assert f.default == expected, f"{name}.{f.name} default"
        if isinstance(avro["type"], dict) and avro["type"].get("type") == "enum":
            assert f.metadata["symbols"] == tuple(avro["type"]["symbols"])


def test_records_are_validated_when_built() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        records.ManifestPulled(event_id="e", occurred_at=WHEN, source="nope", registry="r", repository="a", digest="d")
    with pytest.raises(ValueError, match="occurred_at must be a timezone-aware"):
        records.ManifestPulled(event_id="e", occurred_at=datetime(2026, 1, 1), source="cli", registry="r",
                               repository="a", digest="d")  # fmt: skip
    with pytest.raises(ValueError, match="size must be a non-negative integer"):
        records.BlobRef(digest="d", size=-1, media_type="m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        records.BlobRef(digest="d", size=1, media_type="m").size = 2  # type: ignore[misc]


def image_cached_value() -> dict[str, Any]:
    blob = events.blob_ref("sha256:" + "c" * 64, 10, "application/vnd.oci.image.config.v1+json")
    manifest = events.cached_manifest(digest="sha256:" + "1" * 64, media_type="m", config=blob, layers=[blob, blob],
                                      platform=events.platform("linux", "arm64", "v8"))  # fmt: skip
    return events.image_cached(
        caused_by="pull-1", registry="cache:5000", repository="a/b", digest="sha256:" + "9" * 64, media_type="i",
        manifests=[manifest], skipped=[events.skipped_item("sha256:" + "2" * 64, "platform_excluded", "s390x")],
        total_bytes=30, fetched_bytes=10, started_at=WHEN, completed_at=WHEN, referrers={"signatures": 1},
    )  # fmt: skip


VALUES = {
    "ManifestPulled": events.manifest_pulled(
        event_id="e",
        source="quay",
        registry="cache:5000",
        repository="a/b",
        digest="sha256:" + "1" * 64,
        occurred_at=WHEN,
        manifest=b"{}",
    ),
    "LayerCached": events.layer_cached(
        caused_by="e",
        registry="r",
        repository="a",
        manifest_digest="sha256:1",
        digest="sha256:2",
        size=5,
        media_type="m",
        kind="layer",
        outcome="fetched",
        bytes_fetched=5,
        occurred_at=WHEN,
    ),
    "ImageCached": image_cached_value(),
    "ImageScanned": events.image_scanned(
        caused_by="e",
        registry="r",
        repository="a",
        digest="sha256:1",
        scanner="clair",
        state="indexed",
        packages=3,
        occurred_at=WHEN,
        vulnerabilities=events.vulnerability_counts(high=2),
    ),
}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_the_wire_bytes_do_not_change(name: str) -> None:
    codec = EventCodec()
    value = VALUES[name]
    record = records.BY_NAME[name].from_avro(value)
    assert codec.encode(name, record.to_avro(), "t") == codec.encode(name, value, "t")
    decoded_name, decoded = codec.decode(codec.encode(name, value, "t"))
    assert decoded_name == name and records.BY_NAME[name].from_avro(decoded) == record

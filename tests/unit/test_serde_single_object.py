from __future__ import annotations

import json

import avro.schema
import pytest
from fastavro.schema import to_parsing_canonical_form

from layerfill import schemas
from layerfill.serde import TruncatedMessageError, UnknownMagicError
from layerfill.serde import single_object as so

pytestmark = pytest.mark.unit


def test_fingerprint_matches_the_avro_specification_test_vector() -> None:
    # CRC-64-AVRO of the canonical form of "null" is 0x63dd24e7cc258f8a (Avro's schema test data),
    # written little-endian in the single-object header.
    assert so.schema_fingerprint("null") == bytes.fromhex("8a8f25cce724dd63")


@pytest.mark.parametrize("name", schemas.schema_names())
def test_fingerprint_matches_apache_avro_for_every_schema(name: str) -> None:
    raw = schemas.load_schema_json(name)
    canonical = to_parsing_canonical_form(raw)
    # The specification (and Java) reduce a logical-typed long to plain "long"; Apache's Python
    # package keeps {"type":"long"}, so compare the checksum over the spec's canonical form.
    assert '"logicalType"' not in canonical and '{"type":"long"}' not in canonical
    expected = avro.schema.parse(canonical).fingerprint("CRC-64-AVRO")
    assert so.schema_fingerprint(raw) == bytes(expected)
    # Parsed (fastavro) and raw forms identify the same schema.
    assert so.schema_fingerprint(schemas.load_schema(name)) == bytes(expected)


def test_fingerprint_ignores_docs_but_not_structure() -> None:
    raw = schemas.load_schema_json("ManifestPulled")
    documented = json.loads(json.dumps(raw))
    documented["doc"] = "changed"
    documented["fields"][0]["doc"] = "changed too"
    assert so.schema_fingerprint(documented) == so.schema_fingerprint(raw)
    renamed = json.loads(json.dumps(raw))
    renamed["fields"][0]["name"] = "id"
    assert so.schema_fingerprint(renamed) != so.schema_fingerprint(raw)


def test_header_round_trip_and_errors() -> None:
    fp = bytes(range(8))
    message = so.header(fp) + b"body"
    assert message[:2] == b"\xc3\x01"
    assert so.read_header(message) == fp
    with pytest.raises(ValueError, match="8 bytes"):
        so.header(b"short")
    with pytest.raises(TruncatedMessageError):
        so.read_header(message[:9])
    with pytest.raises(UnknownMagicError):
        so.read_header(b"\x00" + message[1:])

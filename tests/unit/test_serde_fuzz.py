"""Untrusted bytes must only ever produce a decoded event or a SerdeError (a consumer dead-letters it)."""

from __future__ import annotations

import struct

import pytest
from confluent_kafka.schema_registry import Schema
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfill import schemas
from layerfill.serde import EventCodec, SerdeError
from tests.unit.serde_support import FakeRegistryClient, event_values

pytestmark = pytest.mark.unit

_PRODUCER_REGISTRY = FakeRegistryClient(first_id=1)
_PRODUCER = EventCodec(registry_client=_PRODUCER_REGISTRY)
_SINGLE = EventCodec()
# Warm the registry so Confluent-framed fuzz inputs can hit ids it knows.
for _name in schemas.schema_names():
    _PRODUCER_REGISTRY.register_schema("fuzz-value", Schema(_SINGLE.catalog.current_json(_name), "AVRO"))


def _decode_or_serde_error(codec: EventCodec, data: bytes) -> None:
    try:
        record, value = codec.decode(data)
    except SerdeError:
        return
    assert record in schemas.schema_names()
    assert isinstance(value, dict)


def _consumer() -> EventCodec:
    return EventCodec(registry_client=_PRODUCER_REGISTRY)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_serde_error(data: bytes) -> None:
    _decode_or_serde_error(_SINGLE, data)
    _decode_or_serde_error(_consumer(), data)


_FINGERPRINTS = [_SINGLE.catalog.fingerprint(n) for n in schemas.schema_names()]
_KNOWN_IDS = sorted(_PRODUCER_REGISTRY.schemas)


@settings(max_examples=500, deadline=None)
@given(
    header=st.one_of(
        st.sampled_from(_FINGERPRINTS).map(lambda fp: b"\xc3\x01" + fp),
        st.sampled_from(_KNOWN_IDS).map(lambda i: struct.pack(">bI", 0, i)),
    ),
    body=st.binary(max_size=300),
)
def test_valid_headers_with_random_bodies_never_raise_anything_but_serde_error(header: bytes, body: bytes) -> None:
    _decode_or_serde_error(_consumer(), header + body)


@st.composite
def _mutated_messages(draw: st.DrawFn) -> bytes:
    record = draw(st.sampled_from(schemas.schema_names()))
    codec = draw(st.sampled_from([_SINGLE, _PRODUCER]))
    message = bytearray(codec.encode(record, draw(event_values(record)), "fuzz"))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
        position = draw(st.integers(0, max(len(message) - 1, 0)))
        if action == "flip" and message:
            message[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del message[position:]
        elif action == "append":
            message += draw(st.binary(min_size=1, max_size=8))
        else:
            message[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(message)


@settings(max_examples=500, deadline=None)
@given(_mutated_messages())
def test_mutated_valid_messages_never_raise_anything_but_serde_error(data: bytes) -> None:
    _decode_or_serde_error(_consumer(), data)

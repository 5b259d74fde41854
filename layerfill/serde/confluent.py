"""Confluent wire format: magic byte 0 + 4-byte big-endian schema id + Avro binary body.

Schemas are registered under the topic-name strategy (subject ``<topic>-value``). Any object with
``register_schema(subject_name, schema) -> int`` and ``get_schema(schema_id) -> Schema`` works as the
client: ``confluent_kafka.schema_registry.SchemaRegistryClient`` or a test double.
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any, Protocol

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from .errors import (
    RegistryRejectedError,
    RegistryUnavailableError,
    TruncatedMessageError,
    UnknownMagicError,
    UnknownSchemaIdError,
)

MAGIC = b"\x00"
HEADER_SIZE = 5
_HEADER = struct.Struct(">bI")
_NOT_FOUND = 404


class RegistryClient(Protocol):
    """The two calls of ``SchemaRegistryClient`` this module uses."""

    def register_schema(self, subject_name: str, schema: Schema) -> int: ...

    def get_schema(self, schema_id: int) -> Schema: ...


def subject_for(topic: str) -> str:
    """Topic-name strategy subject for record values."""
    return f"{topic}-value"


def header(schema_id: int) -> bytes:
    """The message prefix for ``schema_id``."""
    return _HEADER.pack(0, schema_id)


def read_header(data: bytes) -> int:
    """The schema id of a Confluent-framed message; its body starts at ``HEADER_SIZE``."""
    if data[:1] != MAGIC:
        raise UnknownMagicError(f"not Confluent framed: starts with {bytes(data[:1]).hex()}")
    if len(data) < HEADER_SIZE:
        raise TruncatedMessageError(f"Confluent header needs {HEADER_SIZE} bytes, message has {len(data)}")
    return _HEADER.unpack_from(data)[1]


class RegistrySchemas:
    """Registers writer schemas and fetches them by id, caching both directions.

    The cache keeps the hot path free of registry calls: one registration per (topic, schema) and one
    lookup per schema id for the life of the process.
    """

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def schema_id(self, topic: str, schema_str: str) -> int:
        """The id of ``schema_str`` under ``<topic>-value``, registering it on first use."""
        key = (topic, schema_str)
        found = self._ids.get(key)
        if found is not None:
            return found
        subject = subject_for(topic)
        try:
            schema_id = self._client.register_schema(subject, Schema(schema_str, "AVRO"))
        except SchemaRegistryError as e:
            if e.http_status_code >= 500:
                raise RegistryUnavailableError(f"registering under {subject}: {e}") from e
            raise RegistryRejectedError(f"registry refused schema under {subject}: {e}") from e
        except Exception as e:  # transport errors of whichever HTTP client the registry client uses
            raise RegistryUnavailableError(f"registering under {subject}: {e!r}") from e
        with self._lock:
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, json.loads(schema_str))
        return schema_id

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The JSON of the schema registered as ``schema_id``."""
        found = self._schemas.get(schema_id)
        if found is not None:
            return found
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as e:
            if e.http_status_code == _NOT_FOUND:
                raise UnknownSchemaIdError(schema_id, "not found in the schema registry") from e
            raise RegistryUnavailableError(f"fetching schema id {schema_id}: {e}") from e
        except Exception as e:
            raise RegistryUnavailableError(f"fetching schema id {schema_id}: {e!r}") from e
        if (schema.schema_type or "AVRO") != "AVRO":
            raise UnknownSchemaIdError(schema_id, f"is a {schema.schema_type} schema, not Avro")
        try:
            parsed = json.loads(schema.schema_str)
        except (TypeError, ValueError) as e:
            raise UnknownSchemaIdError(schema_id, f"registry returned unparsable schema text: {e}") from e
        with self._lock:
            self._schemas[schema_id] = parsed
        return parsed

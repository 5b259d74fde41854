"""Encode and decode events in either wire format.

Writes Confluent framing when a schema registry is configured, single-object encoding otherwise;
reads both, resolving whatever writer schema the message names to the current reader schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any

from . import body, confluent, single_object
from .catalog import SchemaCatalog, WriterSchema
from .confluent import RegistryClient, RegistrySchemas
from .errors import TruncatedMessageError, UnknownMagicError, UnknownSchemaIdError

CONFLUENT = "confluent"
SINGLE_OBJECT = "single-object"


class EventCodec:
    """Thread-safe after construction; reuse one instance (schemas are parsed once).

    ``schema_registry_url`` (or an injected ``registry_client``) selects Confluent framing for
    ``encode``; ``registry_config`` adds client settings such as ``basic.auth.user.info``.
    """

    def __init__(
        self,
        schema_registry_url: str | None = None,
        *,
        registry_client: RegistryClient | None = None,
        registry_config: Mapping[str, Any] | None = None,
        catalog: SchemaCatalog | None = None,
    ) -> None:
        if registry_client is None and schema_registry_url:
            # Imported lazily: the single-object path needs no HTTP stack.
            from confluent_kafka.schema_registry import SchemaRegistryClient

            registry_client = SchemaRegistryClient({**(registry_config or {}), "url": schema_registry_url})
        self.catalog = catalog or SchemaCatalog()
        self._registry = RegistrySchemas(registry_client) if registry_client is not None else None
        self._by_id: dict[int, WriterSchema] = {}

    @property
    def wire_format(self) -> str:
        """``"confluent"`` or ``"single-object"``: what ``encode`` writes."""
        return CONFLUENT if self._registry is not None else SINGLE_OBJECT

    def encode(self, record: str, value: Mapping[str, Any], topic: str) -> bytes:
        """Encode ``value`` as event ``record`` (e.g. ``"ManifestPulled"``) for ``topic``.

        Raises ``InvalidEventError`` naming the bad field, ``UnknownRecordError``, or (Confluent
        framing only, first use per topic) a ``RegistryError``.
        """
        schema = self.catalog.current(record)
        buf = BytesIO()
        if self._registry is not None:
            schema_id = self._registry.schema_id(topic, self.catalog.current_json(record))
            buf.write(confluent.header(schema_id))
        else:
            buf.write(single_object.header(self.catalog.fingerprint(record)))
        body.write(buf, record, schema, value)
        return buf.getvalue()

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """``(record name, value)`` of a message in either wire format, in the current schema's shape.

        Raises a ``SerdeError`` subclass for anything wrong with the bytes, and ``RegistryError`` only
        when the registry is needed and cannot answer.
        """
        if not data:
            raise TruncatedMessageError("empty message")
        if data[:1] == confluent.MAGIC:
            found = self._writer_by_id(confluent.read_header(data))
            offset = confluent.HEADER_SIZE
        elif single_object.is_single_object(data):
            found = self.catalog.by_fingerprint(single_object.read_header(data))
            offset = single_object.HEADER_SIZE
        else:
            raise UnknownMagicError(
                f"unknown wire format: first bytes {bytes(data[:2]).hex()} are neither Confluent (00) "
                "nor single-object (c301)"
            )
        return found.record, body.read(data, offset, found.writer, found.reader)

    def _writer_by_id(self, schema_id: int) -> WriterSchema:
        found = self._by_id.get(schema_id)
        if found is not None:
            return found
        if self._registry is None:
            raise UnknownSchemaIdError(schema_id, "Confluent-framed message but no schema registry is configured")
        found = self.catalog.from_registry(self._registry.writer_schema(schema_id))
        self._by_id[schema_id] = found
        return found

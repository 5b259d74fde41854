"""Every event schema this build can read or write, parsed once.

Writer schemas are looked up by single-object fingerprint (current and every released version) or,
for registry-framed messages, by the schema text the registry returns; each is paired with the current
reader schema of its record so decoding resolves old data to the current shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException

from layerfill import schemas

from .errors import UnknownFingerprintError, UnknownRecordError, UnknownSchemaError
from .single_object import schema_fingerprint


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """How to decode one writer schema: ``reader`` is None when the writer is the current schema."""

    record: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None


def _alias_fullnames(schema: dict[str, Any]) -> set[str]:
    namespace = schema["name"].rpartition(".")[0]
    return {a if "." in a or not namespace else f"{namespace}.{a}" for a in schema.get("aliases", [])}


class SchemaCatalog:
    """Current schemas by record name, and writer schemas by fingerprint."""

    def __init__(self, store: schemas.SchemaStore = schemas.DEFAULT_STORE) -> None:
        self.names: tuple[str, ...] = tuple(store.schema_names())
        self._current: dict[str, dict[str, Any]] = {n: store.load_schema(n) for n in self.names}
        self._current_json: dict[str, str] = {
            n: json.dumps(store.load_schema_json(n), separators=(",", ":")) for n in self.names
        }
        self._fingerprints: dict[str, bytes] = {n: schema_fingerprint(s) for n, s in self._current.items()}
        # Writer records are matched to readers by full name or by a reader alias (a renamed record).
        self._record_by_fullname: dict[str, str] = {}
        for name, schema in self._current.items():
            for fullname in {schema["name"], *_alias_fullnames(schema)}:
                self._record_by_fullname[fullname] = name
        self._by_fingerprint: dict[bytes, WriterSchema] = {
            fp: WriterSchema(name, self._current[name], None) for name, fp in self._fingerprints.items()
        }
        # Newest release first, so an unchanged schema keeps the newest text.
        for version in reversed(store.released_versions()):
            for name in store.released_names(version):
                self._add_writer(store.load_released(version, name))

    def _add_writer(self, writer: dict[str, Any]) -> WriterSchema:
        fp = schema_fingerprint(writer)
        known = self._by_fingerprint.get(fp)
        if known is not None:
            return known
        record = self._record_for(writer)
        entry = WriterSchema(record, writer, self._current[record])
        self._by_fingerprint[fp] = entry
        return entry

    def _record_for(self, writer: dict[str, Any]) -> str:
        fullname = writer.get("name", "") if isinstance(writer, dict) else ""
        record = self._record_by_fullname.get(fullname)
        if record is None:
            raise UnknownRecordError(fullname or repr(writer)[:80], list(self.names))
        return record

    def current(self, record: str) -> dict[str, Any]:
        """The parsed current schema of ``record`` (short name, e.g. ``"ManifestPulled"``)."""
        try:
            return self._current[record]
        except KeyError:
            raise UnknownRecordError(record, list(self.names)) from None

    def current_json(self, record: str) -> str:
        """The current schema of ``record`` as compact JSON text (docs included), for registries."""
        self.current(record)
        return self._current_json[record]

    def fingerprint(self, record: str) -> bytes:
        """Single-object fingerprint of the current schema of ``record``."""
        self.current(record)
        return self._fingerprints[record]

    def by_fingerprint(self, fp: bytes) -> WriterSchema:
        """The writer schema with fingerprint ``fp`` (current or released)."""
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            raise UnknownFingerprintError(fp) from None

    def from_registry(self, schema_json: dict[str, Any]) -> WriterSchema:
        """A writer schema fetched from a schema registry, matched to its record by name or alias."""
        try:
            writer = fastavro.parse_schema(schema_json)
        except (SchemaParseException, ValueError, TypeError, KeyError, AttributeError) as e:
            raise UnknownSchemaError(f"registry schema is not valid Avro: {e}") from e
        return self._add_writer(writer)

"""Test helpers for the serde tests: an in-memory schema registry and Avro value strategies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from hypothesis import strategies as st

from layerfill import schemas


class FakeRegistryClient:
    """The two SchemaRegistryClient calls EventCodec uses, kept in memory.

    Like a real registry, the same schema text gets the same id whatever the subject.
    """

    def __init__(self, first_id: int = 1) -> None:
        self.schemas: dict[int, Schema] = {}
        self.subjects: dict[str, list[int]] = {}
        self.register_calls = 0
        self.get_calls = 0
        self._next_id = first_id

    def register_schema(self, subject_name: str, schema: Schema, normalize_schemas: bool = False) -> int:
        self.register_calls += 1
        schema_id = next((i for i, s in self.schemas.items() if s.schema_str == schema.schema_str), None)
        if schema_id is None:
            schema_id = self._next_id
            self._next_id += 1
            self.schemas[schema_id] = schema
        ids = self.subjects.setdefault(subject_name, [])
        if schema_id not in ids:
            ids.append(schema_id)
        return schema_id

    def get_schema(self, schema_id: int, subject_name: str | None = None, fmt: str | None = None) -> Schema:
        self.get_calls += 1
        try:
            return self.schemas[schema_id]
        except KeyError:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found") from None


_PRIMITIVE_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=40),
    "string": st.text(max_size=20),
}

# timestamp-millis round-trips exactly only at millisecond precision.
_MILLIS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)


_UTF8_BYTES = st.text(max_size=20).map(str.encode)


def values_for(schema: Any, named: dict[str, Any] | None = None, *, utf8_bytes: bool = False) -> st.SearchStrategy[Any]:
    """Values valid for a fastavro-parsed schema, in the shape fastavro decodes them to.

    ``utf8_bytes`` keeps ``bytes`` values valid UTF-8, for readers that promote bytes to string.
    """
    if named is None:
        named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}

    def primitive(kind: str) -> st.SearchStrategy[Any]:
        return _UTF8_BYTES if utf8_bytes and kind == "bytes" else _PRIMITIVE_STRATEGIES[kind]

    if isinstance(schema, list):
        return st.one_of([values_for(branch, named, utf8_bytes=utf8_bytes) for branch in schema])
    if isinstance(schema, str):
        if schema in _PRIMITIVE_STRATEGIES:
            return primitive(schema)
        return st.deferred(lambda: values_for(named[schema], named, utf8_bytes=utf8_bytes))
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return _MILLIS
    if kind in _PRIMITIVE_STRATEGIES:
        return primitive(kind)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values_for(schema["items"], named, utf8_bytes=utf8_bytes), max_size=3)
    if kind == "map":
        values = values_for(schema["values"], named, utf8_bytes=utf8_bytes)
        return st.dictionaries(st.text(max_size=8), values, max_size=3)
    if kind == "record":
        fields = {f["name"]: values_for(f["type"], named, utf8_bytes=utf8_bytes) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    raise ValueError(f"no strategy for {schema!r}")


def event_values(record: str) -> st.SearchStrategy[dict[str, Any]]:
    """Random valid values of the current schema of ``record``."""
    return values_for(schemas.load_schema(record))

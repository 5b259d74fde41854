"""The Avro binary body of one record, with fastavro's errors turned into ``SerdeError``s."""

from __future__ import annotations

import re
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate

from .errors import InvalidEventError, MalformedBodyError, ResolutionError, TruncatedMessageError

_EXTRA_FIELD = re.compile(r"more fields than the schema specifies: (\S+)")


def write(buf: BytesIO, record: str, schema: dict[str, Any], value: Any) -> None:
    """Append ``value`` encoded with ``schema`` to ``buf``; unknown keys are rejected (typo guard)."""
    try:
        fastavro.schemaless_writer(buf, schema, value, strict_allow_default=True)
    except Exception as e:
        # Off the hot path: ask the validator which field is wrong, for a precise message.
        raise _invalid(record, schema, value, e) from e


def _invalid(record: str, schema: dict[str, Any], value: Any, cause: Exception) -> InvalidEventError:
    if not isinstance(value, Mapping):
        return InvalidEventError(record, None, f"expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - {f["name"] for f in schema["fields"]}, key=str)
    if unknown:
        return InvalidEventError(record, str(unknown[0]), "not a field of the schema")
    try:
        validate(value, schema, raise_errors=True)
    except ValidationError as ve:
        first = ve.errors[0]
        return InvalidEventError(record, _field_path(schema["name"], first.field), _expected(first))
    except Exception:  # the validator itself choked on the value: fall back to the writer's message
        pass
    extra = _EXTRA_FIELD.search(str(cause))
    if extra:  # the validator ignores unknown keys of nested records; fastavro's strict writer does not
        return InvalidEventError(record, extra.group(1), "not a field of the schema")
    return InvalidEventError(record, None, str(cause) or type(cause).__name__)


def _field_path(root: str, field: str | None) -> str | None:
    # The validator names a field "<fullname of its record>.<field>": drop the namespace noise.
    if not field:
        return None
    if field.startswith(root + "."):
        return field[len(root) + 1 :]
    namespace = root.rpartition(".")[0]
    return field.removeprefix(namespace + ".") if namespace else field


def _expected(error: Any) -> str:
    schema = error.schema
    if isinstance(schema, dict) and schema.get("type") == "enum":
        wanted = f"one of {', '.join(schema['symbols'])}"
    elif isinstance(schema, dict) and "logicalType" in schema:
        wanted = f"a {schema['type']} ({schema['logicalType']})"
    elif isinstance(schema, dict):
        wanted = f"a {schema['type']}"
    else:
        wanted = f"a {schema}"
    return f"{error.datum!r} is not {wanted}"


def read(data: bytes, offset: int, writer: dict[str, Any], reader: dict[str, Any] | None) -> dict[str, Any]:
    """Decode the body at ``data[offset:]``, which must hold exactly one record."""
    buf = BytesIO(data)
    buf.seek(offset)
    try:
        value = fastavro.schemaless_reader(buf, writer, reader)
    except EOFError as e:
        raise TruncatedMessageError(f"body ends early or has a bad length prefix: {e}") from e
    except SchemaResolutionError as e:
        raise ResolutionError(str(e)) from e
    except Exception as e:  # any other failure on untrusted bytes: bad varint, UTF-8, enum index...
        if buf.tell() >= len(data):
            # fastavro reports a varint cut short as IndexError: it ran out of input.
            raise TruncatedMessageError(f"body ends early: {type(e).__name__}: {e}") from e
        raise MalformedBodyError(f"{type(e).__name__}: {e}") from e
    rest = len(data) - buf.tell()
    if rest:
        raise MalformedBodyError(f"{rest} trailing byte(s) after the record")
    return value

"""Exceptions of the serde layer.

``SerdeError`` means the bytes or the value are bad: retrying cannot help, so a consumer dead-letters
the message. ``RegistryError`` means the schema registry could not answer: a consumer retries.
"""

from __future__ import annotations


class SerdeError(Exception):
    """A message cannot be decoded, or a value cannot be encoded."""


class UnknownMagicError(SerdeError):
    """The message starts with neither Confluent framing (0x00) nor single-object encoding (0xC3 0x01)."""


class TruncatedMessageError(SerdeError):
    """The message ends before its header or its Avro body is complete (or a length prefix is bogus)."""


class MalformedBodyError(SerdeError):
    """The Avro body does not decode with its writer schema (bad varint, bad UTF-8, trailing bytes...)."""


class ResolutionError(SerdeError):
    """The writer's data cannot be read with the current reader schema (e.g. an enum symbol it lacks)."""


class UnknownSchemaError(SerdeError):
    """The writer schema, or the record type, is not one this build knows."""


class UnknownFingerprintError(UnknownSchemaError):
    """No current or released schema has the single-object message's fingerprint."""

    def __init__(self, fingerprint: bytes) -> None:
        super().__init__(f"no known schema has CRC-64-AVRO fingerprint {fingerprint.hex()}")
        self.fingerprint = fingerprint


class UnknownSchemaIdError(UnknownSchemaError):
    """The schema registry does not know the Confluent-framed message's schema id."""

    def __init__(self, schema_id: int, reason: str) -> None:
        super().__init__(f"schema id {schema_id}: {reason}")
        self.schema_id = schema_id


class UnknownRecordError(UnknownSchemaError):
    """A record name that matches no event schema."""

    def __init__(self, record: str, known: list[str]) -> None:
        super().__init__(f"unknown event record {record!r}; known: {', '.join(known)}")
        self.record = record


class InvalidEventError(SerdeError):
    """A value does not match its record's schema; ``field`` names the offending field path."""

    def __init__(self, record: str, field: str | None, reason: str) -> None:
        where = f" field {field}" if field else ""
        super().__init__(f"invalid {record} event{where}: {reason}")
        self.record = record
        self.field = field


class RegistryError(Exception):
    """The schema registry failed; not a problem of the message itself."""


class RegistryUnavailableError(RegistryError):
    """The schema registry could not be reached or answered with a server error: retry later."""


class RegistryRejectedError(RegistryError):
    """The schema registry refused to register a schema (e.g. incompatible with the subject's history)."""

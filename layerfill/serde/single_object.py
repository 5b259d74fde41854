"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + binary body.

The fingerprint is taken over the schema's Parsing Canonical Form, so doc or default edits do not
change it; it is written little-endian, as the Avro specification and the Java implementation do.
"""

from __future__ import annotations

from typing import Any

from fastavro.schema import fingerprint, to_parsing_canonical_form

from .errors import TruncatedMessageError, UnknownMagicError

MAGIC = b"\xc3\x01"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MAGIC) + FINGERPRINT_SIZE


def schema_fingerprint(schema: dict[str, Any] | list[Any] | str) -> bytes:
    """The 8 header bytes identifying ``schema`` (raw JSON or fastavro-parsed)."""
    # fastavro renders the CRC-64-AVRO value as the hex of its little-endian bytes.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def header(schema_fp: bytes) -> bytes:
    """The message prefix for a schema with fingerprint ``schema_fp``."""
    if len(schema_fp) != FINGERPRINT_SIZE:
        raise ValueError(f"fingerprint must be {FINGERPRINT_SIZE} bytes, got {len(schema_fp)}")
    return MAGIC + schema_fp


def is_single_object(data: bytes) -> bool:
    """Whether ``data`` starts with the single-object marker."""
    return data[:2] == MAGIC


def read_header(data: bytes) -> bytes:
    """The fingerprint of a single-object message; its body starts at ``HEADER_SIZE``."""
    if not is_single_object(data):
        raise UnknownMagicError(f"not single-object encoded: starts with {bytes(data[:2]).hex()}")
    if len(data) < HEADER_SIZE:
        raise TruncatedMessageError(f"single-object header needs {HEADER_SIZE} bytes, message has {len(data)}")
    return bytes(data[len(MAGIC) : HEADER_SIZE])

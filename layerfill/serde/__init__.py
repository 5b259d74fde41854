"""Event serialization: Avro bodies in Confluent or single-object framing (see ``codec.EventCodec``)."""

from .codec import EventCodec
from .errors import (
    InvalidEventError,
    MalformedBodyError,
    RegistryError,
    RegistryRejectedError,
    RegistryUnavailableError,
    ResolutionError,
    SerdeError,
    TruncatedMessageError,
    UnknownFingerprintError,
    UnknownMagicError,
    UnknownRecordError,
    UnknownSchemaError,
    UnknownSchemaIdError,
)

__all__ = [
    "EventCodec",
    "InvalidEventError",
    "MalformedBodyError",
    "RegistryError",
    "RegistryRejectedError",
    "RegistryUnavailableError",
    "ResolutionError",
    "SerdeError",
    "TruncatedMessageError",
    "UnknownFingerprintError",
    "UnknownMagicError",
    "UnknownRecordError",
    "UnknownSchemaError",
    "UnknownSchemaIdError",
]

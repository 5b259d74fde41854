"""Which failures are worth retrying. Permanent ones are dead-lettered at once with their cause; transient
ones are retried in process, then through the retry topic, then dead-lettered."""

from __future__ import annotations

import requests

from layerfill.config.routes import NoRoute
from layerfill.oci.digest import DigestMismatch, SizeMismatch
from layerfill.oci.manifest import ManifestError
from layerfill.oci.plan import PlanError
from layerfill.oci.reference import InvalidReference
from layerfill.remote.errors import DigestMismatch as UpstreamDigestMismatch
from layerfill.remote.errors import NotFound, Unauthorized, UpstreamError
from layerfill.serde.errors import SerdeError
from layerfill.sinks.base import SinkError, SinkIntegrityError, SinkUnavailable


class PermanentError(Exception):
    """Retrying cannot help: bad input, no route, content the product cannot handle."""


class TransientError(Exception):
    """Worth another try later: upstream or storage trouble, or bytes that did not verify."""


# SinkError itself (not its transient subclasses): refused credentials, a 404 from the proxy.
PERMANENT = (
    SinkError,
    NoRoute,
    InvalidReference,
    ManifestError,
    PlanError,
    NotFound,
    Unauthorized,
    SerdeError,
    PermanentError,
)
# Bytes that did not verify are retried: a corrupting proxy or a torn body is usually passing. They are never
# stored, and after the last attempt the event is dead-lettered with the mismatch as its cause.
TRANSIENT = (
    DigestMismatch,
    UpstreamDigestMismatch,
    SizeMismatch,
    SinkIntegrityError,
    SinkUnavailable,
    requests.RequestException,
    ConnectionError,
    TimeoutError,
    TransientError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, PERMANENT):
        return False
    if isinstance(exc, UpstreamError):
        # The client marks 5xx, 429 and broken bodies transient.
        return exc.transient
    # Unknown errors are retried too: a bug then ends in the DLQ with its class and message, never lost.
    return True


def describe(exc: BaseException) -> str:
    """Class and message, never credentials (the remote/sink errors already redact URLs)."""
    return f"{type(exc).__name__}: {exc}"[:2000]

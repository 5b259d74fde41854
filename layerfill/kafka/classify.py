"""Which failures of a consumer stage are worth another try: the one rule the fetcher and the scanner share.

The rule, first match wins:

1. An error that says so itself: a `transient` attribute (True/False), as go-containerregistry's errors answer
   `Temporary()`. The upstream client's errors carry it (5xx, 429 and broken bodies transient; 404, 401/403,
   oversized manifests not), and so do the scanner's Clair errors.
2. Bytes that did not verify (a digest or size mismatch, upstream or in storage) are transient: a corrupting
   proxy or a torn body is usually passing. They are never stored, and after the last attempt the event is
   dead-lettered with the mismatch as its cause.
3. Storage or the network being unavailable (a sink that is down, connection errors, timeouts) is transient.
4. Anything about the event or the content itself is permanent, dead-lettered at once: no route, a malformed
   record, a manifest or plan the product cannot handle, a storage error that is not an outage (refused
   credentials), and every ValueError (InvalidInput, InvalidReference...): the same input gives the same answer.
5. Anything else is transient: a bug then ends in the dead-letter topic with its class and message after the
   retries, never lost.
"""

from __future__ import annotations

import requests

from layerfill.config.routes import NoRoute
from layerfill.oci.digest import DigestMismatch, SizeMismatch
from layerfill.remote.transport.redact import scrub
from layerfill.serde.errors import SerdeError
from layerfill.sinks.base import SinkError, SinkIntegrityError, SinkUnavailable


class PermanentError(Exception):
    """Retrying cannot help: bad input, content the product cannot handle."""

    transient = False


class TransientError(Exception):
    """Worth another try later."""

    transient = True


# Checked before PERMANENT: these are ValueErrors and SinkErrors too.
TRANSIENT: tuple[type[BaseException], ...] = (
    DigestMismatch,
    SizeMismatch,
    SinkIntegrityError,
    SinkUnavailable,
    requests.RequestException,
    ConnectionError,
    TimeoutError,
)
PERMANENT: tuple[type[BaseException], ...] = (NoRoute, SerdeError, SinkError, ValueError)


def is_transient(exc: BaseException) -> bool:
    """The module docstring's rule."""
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, TRANSIENT):
        return True
    return not isinstance(exc, PERMANENT)


def describe(exc: BaseException) -> str:
    """The cause as logs and dead-letter headers carry it: class and message, with URL queries (presigned
    signatures) and known credentials masked."""
    return scrub(f"{type(exc).__name__}: {exc}")[:2000]

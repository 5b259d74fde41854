"""How a scan can fail, and which failures are worth another try.

- ClairUnavailable: Clair did not answer, or answered 5xx without a report: retried in process, then through
  the retry topic, then dead-lettered (the event is never dropped).
- IndexFailed: Clair answered with an IndexError report: retried in process (Clair indexes again), then
  recorded as the scan's final `index_error` with Clair's message.
- ClairRejected: Clair refused the manifest (HTTP 4xx): recorded as `unsupported` with Clair's message.
- Anything about the event itself (no route, a bad digest) is permanent: dead-lettered at once."""

from __future__ import annotations

import requests

from layerfill.config.routes import NoRoute
from layerfill.oci.reference import InvalidReference
from layerfill.remote.transport.redact import scrub
from layerfill.serde.errors import SerdeError

from .reports import ReportError


class ClairUnavailable(Exception):
    """Clair is down, unreachable, overloaded or broken: try again later."""


class ClairRejected(Exception):
    """Clair answered 4xx to the index request: it cannot handle this manifest."""


class IndexFailed(Exception):
    """Clair's index report ended in IndexError; the message is Clair's."""


PERMANENT = (NoRoute, InvalidReference, SerdeError, ValueError)
# ReportError is a ValueError, but a garbled answer is Clair's fault, not the event's.
TRANSIENT = (ClairUnavailable, ReportError, requests.RequestException, ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    # Unknown errors are retried too: a bug then ends in the DLQ with its class and message, never lost.
    return isinstance(exc, TRANSIENT) or not isinstance(exc, PERMANENT)


def describe(exc: BaseException) -> str:
    """Class and message, with URL queries (presigned signatures) and known credentials masked."""
    return scrub(f"{type(exc).__name__}: {exc}")[:2000]

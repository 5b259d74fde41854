"""The one retry rule of every stage (layerfill.kafka.classify): an error's own flag first, then bytes that did
not verify and outages transient, the event's or the content's own faults permanent, the unknown transient."""

from __future__ import annotations

import pytest
import requests

from layerfill.config.routes import NoRoute
from layerfill.consumers.fetcher.fill import DescriptorSizeMismatch
from layerfill.consumers.scanner.errors import ClairRejected, ClairUnavailable, IndexFailed
from layerfill.consumers.scanner.reports import ReportError
from layerfill.kafka.classify import PermanentError, TransientError, describe, is_transient
from layerfill.oci.digest import DigestMismatch, SizeMismatch
from layerfill.oci.manifest import InvalidManifest
from layerfill.oci.plan import PlanError
from layerfill.oci.reference import InvalidReference
from layerfill.remote import errors as remote
from layerfill.serde.errors import TruncatedMessageError
from layerfill.sinks.base import SinkError, SinkIntegrityError, SinkUnavailable

pytestmark = pytest.mark.unit

URL = "https://up.example/v2/a/blobs/sha256:1?X-Amz-Signature=secret"

TRANSIENT = [
    remote.UpstreamError("HTTP 503", status=503, transient=True),
    remote.RateLimited("slow down", retry_after=3.0),
    remote.BodyInterrupted("reset"),
    remote.DigestMismatch(expected="sha256:1", actual="sha256:2"),  # the error's own flag says so
    DigestMismatch("sha256:1", "sha256:2"),  # a ValueError, but bytes that did not verify
    SizeMismatch(1, 2),
    SinkIntegrityError("stored bytes do not verify"),
    SinkUnavailable("S3 503"),
    requests.ConnectionError("refused"),
    ConnectionResetError("reset"),
    TimeoutError("slow"),
    ClairUnavailable("Clair down"),
    IndexFailed("IndexError"),
    ReportError("garbled report"),  # a ValueError, but Clair's fault, not the event's
    TransientError("later"),
    KeyError("a bug"),  # the unknown: retried, then dead-lettered with its class and message
    RuntimeError("a bug"),
]
PERMANENT = [
    remote.NotFound("no such manifest"),
    remote.Unauthorized("forbidden", status=403),
    remote.ManifestTooLarge("too large", limit=4, size=5),
    remote.UpstreamError("HTTP 400", status=400),
    remote.InvalidInput("repository", "A//b", "not a repository name"),  # the fetcher retried it before
    InvalidReference("digest", "sha256:nope", "not a digest"),
    InvalidManifest("$", "not JSON"),
    PlanError("too many layers"),
    NoRoute("cache.example", "a"),
    TruncatedMessageError("empty message"),
    SinkError("credentials refused"),
    ClairRejected("HTTP 400"),
    DescriptorSizeMismatch("sha256:1", 1, 2),
    PermanentError("never"),
    ValueError("the same input gives the same answer"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_permanent(exc: BaseException) -> None:
    assert is_transient(exc) is False


def test_an_errors_own_flag_wins_over_its_class() -> None:
    class Refused(requests.ConnectionError):
        transient = False

    class Flaky(ValueError):
        transient = True

    assert is_transient(Refused()) is False and is_transient(Flaky()) is True
    # Only a bool counts as a flag.
    assert is_transient(type("Odd", (ValueError,), {"transient": "yes"})()) is False


def test_describe_is_class_and_message_without_secrets() -> None:
    assert describe(ValueError("bad digest")) == "ValueError: bad digest"
    text = describe(remote.UpstreamError("HTTP 500", url=URL, status=500, transient=True))
    assert text.startswith("UpstreamError: HTTP 500 | status 500 | https://up.example/v2/a/blobs/sha256:1")
    assert "secret" not in text
    assert len(describe(ValueError("x" * 5000))) == 2000

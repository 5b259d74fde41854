"""Counts every request layerfill sends to an upstream, and the bytes it reads back, per route.

Sits innermost (just outside HttpTransport), so each attempt of a retried request and each token request is
one request, as the upstream's own access log counts them. Labels:
- `route`: the route's label, bound when the client is built;
- `kind`: manifest, blob, token or other; from the request path (`/v2/<name>/manifests/..`, `/blobs/..`), from
  `request_kind()` for hops the path does not tell (a blob redirected to storage), `token` for the token chain;
- `reason`: why the fetcher asked (fill, repair, backfill), from `upstream_reason()` around the caller's work;
- `method`, `code` (the HTTP status, or `error` when no response came back).
Response bytes are what came over the wire (urllib3's `tell()`), counted when the response is closed.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter
from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter

from layerfill.remote.transport.base import WrappingTransport

KINDS = ("manifest", "blob", "token", "other")
REASONS = ("fill", "repair", "backfill")

REQUESTS = Counter(
    "layerfill_upstream_requests_total",
    "Requests sent to upstream registries (each retry attempt and token request counts)",
    ["route", "kind", "reason", "method", "code"],
)
RESPONSE_BYTES = Counter(
    "layerfill_upstream_response_bytes_total",
    "Response bytes read from upstream registries, as received on the wire",
    ["route", "kind", "reason"],
)
RETRY_AFTER = Counter(
    "layerfill_upstream_retry_after_total", "Upstream responses that carried a Retry-After header", ["route"]
)

_reason: ContextVar[str] = ContextVar("layerfill_upstream_reason", default="fill")
_kind: ContextVar[str | None] = ContextVar("layerfill_upstream_kind", default=None)
_PATH = re.compile(r"^/v2/.+/(manifests|blobs)/[^/]+$")


@contextmanager
def upstream_reason(reason: str) -> Iterator[None]:
    """Requests sent by this thread inside the block are counted under `reason`."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
    token = _reason.set(reason)
    try:
        yield
    finally:
        _reason.reset(token)


@contextmanager
def request_kind(kind: str) -> Iterator[None]:
    """Requests sent by this thread inside the block whose path does not tell their kind count as `kind`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    token = _kind.set(kind)
    try:
        yield
    finally:
        _kind.reset(token)


def kind_of(url: str) -> str:
    """manifest or blob from a registry API path; otherwise the enclosing `request_kind`, else other."""
    match = _PATH.match(urlsplit(url).path)
    if match:
        return "manifest" if match.group(1) == "manifests" else "blob"
    return _kind.get() or "other"


class _Once:
    """Adds a response's wire bytes exactly once, whoever gets there first (close or garbage collection)."""

    def __init__(self, raw: Any, counter: Any) -> None:
        self._raw: Any = raw
        self._counter = counter
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            n = int(raw.tell())
        except Exception:  # a response without a urllib3 body (a test double): nothing to count
            return
        if n > 0:
            self._counter.inc(n)


class MeteredTransport(WrappingTransport):
    def __init__(self, inner: BaseAdapter, route: str, *, kind: str | None = None) -> None:
        super().__init__(inner)
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.route = route
        self.kind = kind

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        kind = self.kind or kind_of(request.url or "")
        reason = _reason.get()
        method = request.method or "GET"
        try:
            response = self.inner.send(request, **kwargs)
        except BaseException:
            REQUESTS.labels(self.route, kind, reason, method, "error").inc()
            raise
        REQUESTS.labels(self.route, kind, reason, method, str(response.status_code)).inc()
        if "Retry-After" in response.headers:
            RETRY_AFTER.labels(self.route).inc()
        count = _Once(response.raw, RESPONSE_BYTES.labels(self.route, kind, reason))
        close = response.close

        def close_and_count() -> None:
            try:
                close()
            finally:
                count()

        response.close = close_and_count  # type: ignore[method-assign]
        weakref.finalize(response, count)
        return response

    def __repr__(self) -> str:
        return f"MeteredTransport({self.inner!r}, route={self.route!r})"

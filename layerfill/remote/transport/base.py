"""Shared pieces of the transport chain: the wrapper base class, origins, and safe body handling.

A transport is a `requests` adapter (`send(PreparedRequest, **kwargs) -> Response`), so the chain can be
mounted on a `requests.Session` and each concern wraps the next, as RoundTrippers do in
go-containerregistry. Wrappers never mutate the request they are given: they send a copy.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter

from layerfill.remote.errors import BodyInterrupted, UpstreamError

_DEFAULT_PORTS = {"http": 80, "https": 443}
# How much of a response we are willing to read only to let its connection be reused.
_DRAIN_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """scheme://host:port of a URL: the unit of trust for credentials and of concurrency limits."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"only http and https URLs are supported, got scheme {scheme!r}")
        host = (parts.hostname or "").lower()
        if not host:
            raise ValueError("URL has no host")
        return cls(scheme, host, parts.port or _DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class WrappingTransport(BaseAdapter):
    """A transport that adds one concern around `inner`; the default just forwards."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        return self.inner.send(request, **kwargs)

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def with_header(request: PreparedRequest, name: str, value: str) -> PreparedRequest:
    """A copy of `request` with one header set."""
    copy = request.copy()
    copy.headers[name] = value
    return copy


def discard(response: Response) -> None:
    """Close a response we will not use, reading a small remainder first so the connection is reused."""
    try:
        if response.raw is not None and not response.raw.closed:
            response.raw.read(_DRAIN_LIMIT, decode_content=False)
    except Exception:  # the connection is dropped below either way; nothing useful to report
        pass
    finally:
        response.close()


def read_capped(response: Response, limit: int, too_large: Callable[[int], Exception]) -> bytes:
    """Read a streamed body of at most `limit` bytes; `too_large(seen)` builds the error past it."""
    declared = content_length(response)
    if declared is not None and declared > limit:
        response.close()
        raise too_large(declared)
    buffer = bytearray()
    try:
        for chunk in response.raw.stream(64 * 1024, decode_content=True):
            buffer += chunk
            if len(buffer) > limit:
                raise too_large(len(buffer))
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate_read_error(exc, response.url) from None
    finally:
        response.close()
    return bytes(buffer)


def content_length(response: Response) -> int | None:
    """Content-Length as an int, or None when absent or malformed."""
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps (reason, cause, context, exception args), outermost first."""
    seen: set[int] = set()
    found: list[BaseException] = []
    queue: list[BaseException] = [exc]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        for attr in ("reason", "__cause__", "__context__"):
            nested = getattr(current, attr, None)
            if isinstance(nested, BaseException):
                queue.append(nested)
        queue.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return found


def _os_reason(exc: BaseException) -> str | None:
    """A short, secret-free description of the socket-level cause, if there is one."""
    causes = _causes(exc)
    if any(isinstance(c, urllib3.exceptions.IncompleteRead | http.client.IncompleteRead) for c in causes):
        return "body ended before its announced length"
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno:
            name = errno.errorcode.get(cause.errno, str(cause.errno))
            return f"{os.strerror(cause.errno).lower()} ({name})"
    # After errno: urllib3's NewConnectionError subclasses its ConnectTimeoutError.
    if any(isinstance(c, socket.timeout | TimeoutError | urllib3.exceptions.TimeoutError) for c in causes):
        return "timed out"
    return None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.SSLError | urllib3.exceptions.SSLError):
        return False  # a certificate problem does not fix itself on retry
    return isinstance(
        exc,
        requests.ConnectionError
        | requests.Timeout
        | requests.exceptions.ChunkedEncodingError
        | urllib3.exceptions.ProtocolError
        | urllib3.exceptions.TimeoutError
        | urllib3.exceptions.NewConnectionError
        | ConnectionError
        | TimeoutError,
    )


def translate_error(exc: BaseException, method: str | None, url: str | None) -> UpstreamError:
    """An UpstreamError for a failure to send or connect; the original message is NOT kept.

    Library messages embed the full URL (signed query strings included), so only the exception
    class and the socket-level reason survive.
    """
    reason = _os_reason(exc) or "no further detail"
    verb = f"{method} " if method else ""
    return UpstreamError(
        f"{verb}request failed: {type(exc).__name__}: {reason}",
        url=url,
        transient=_is_transient(exc),
    )


def translate_read_error(exc: BaseException, url: str | None) -> UpstreamError:
    """The error for a failure while reading a body; transient ones become BodyInterrupted."""
    reason = _os_reason(exc) or "no further detail"
    if _is_transient(exc) or isinstance(exc, OSError):
        return BodyInterrupted(f"body read failed: {type(exc).__name__}: {reason}", url=url)
    return UpstreamError(f"body read failed: {type(exc).__name__}: {reason}", url=url)

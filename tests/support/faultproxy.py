"""A misbehaving HTTP reverse proxy for failure drills: put it between layerfill and an upstream registry and
tell it, request by request, to pass through, corrupt, truncate, reset, trickle or fail.

    with FaultProxy("http://127.0.0.1:15000") as fp:
        fp.add(Corrupt(), digest=layer_digest)            # every GET of that blob: same length, wrong bytes
        fp.add(Status(429, retry_after="1"), times=2)      # the next two requests of any path: 429
        ... route upstream_url=fp.url ...
        assert fp.count(f"/blobs/{layer_digest}") == 9

Rules are tried in the order added; the first that matches (and has not used up `times`) decides what
happens to a request; no match means pass-through. Every request is recorded with its status and the
body bytes actually sent, live, so a test can watch a download progress.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO
from urllib.parse import urlsplit

CHUNK = 64 * 1024
# Connection-level headers a proxy must not forward (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


# -- what to do with a request --------------------------------------------------------------------------


@dataclass(frozen=True)
class PassThrough:
    """Forward the request and the response unchanged."""


@dataclass(frozen=True)
class Corrupt:
    """Flip (XOR 0xFF) `count` body bytes starting at blob offset `at`; the length stays the same.
    Offsets are of the whole blob: a ranged (206) response is corrupted at the same blob positions."""

    at: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        _check_int("Corrupt.at", self.at, 0)
        _check_int("Corrupt.count", self.count, 1)


@dataclass(frozen=True)
class Truncate:
    """Send the upstream's headers (its full Content-Length) but only `after` body bytes, then close cleanly."""

    after: int

    def __post_init__(self) -> None:
        _check_int("Truncate.after", self.after, 0)


@dataclass(frozen=True)
class Reset:
    """Send `after` body bytes, then abort the connection with a TCP RST."""

    after: int

    def __post_init__(self) -> None:
        _check_int("Reset.after", self.after, 0)


@dataclass(frozen=True)
class Status:
    """Answer `code` at once without asking the upstream, with a registry-style error body."""

    code: int
    retry_after: str | None = None

    def __post_init__(self) -> None:
        _check_int("Status.code", self.code, 100)
        if self.code > 599:
            raise ValueError(f"Status.code must be an HTTP status from 100 to 599, got {self.code!r}")
        if self.retry_after is not None and not isinstance(self.retry_after, str):
            raise ValueError(f"Status.retry_after must be a header value string, got {self.retry_after!r}")


@dataclass(frozen=True)
class Slow:
    """Trickle the body at about `bytes_per_s`, in writes of `chunk` bytes."""

    bytes_per_s: int
    chunk: int = CHUNK

    def __post_init__(self) -> None:
        _check_int("Slow.bytes_per_s", self.bytes_per_s, 1)
        _check_int("Slow.chunk", self.chunk, 1)


Action = PassThrough | Corrupt | Truncate | Reset | Status | Slow


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# -- which requests it applies to -----------------------------------------------------------------------


@dataclass
class Rule:
    action: Action
    path: str | None = None  # a regular expression searched in the request path
    digest: str | None = None  # matches .../blobs/<digest> and .../manifests/<digest>
    method: str | None = None  # e.g. "GET"; None = any
    times: int | None = None  # apply to the first `times` matching requests only; None = always
    hits: int = 0

    def __post_init__(self) -> None:
        if self.times is not None:
            _check_int("Rule.times", self.times, 1)
        self._pattern = re.compile(self.path) if self.path is not None else None

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and method.upper() != self.method.upper():
            return False
        if self.digest is not None and not path.endswith((f"/blobs/{self.digest}", f"/manifests/{self.digest}")):
            return False
        return self._pattern is None or self._pattern.search(path) is not None


@dataclass
class Request:
    """One request seen; `body_bytes` grows while the response is being sent."""

    method: str
    path: str
    action: Action
    status: int | None = None
    body_bytes: int = 0
    done: bool = False


# -- the proxy --------------------------------------------------------------------------------------------


class FaultProxy:
    def __init__(self, upstream_url: str, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname or parts.path.strip("/"):
            raise ValueError(f"upstream_url must be http://host[:port], got {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.timeout = timeout
        self._rules: list[Rule] = []
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="faultproxy", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """`127.0.0.1:<port>`, as a registry host name."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # configuration
    def add(self, action: Action, *, path: str | None = None, digest: str | None = None, method: str | None = None,
            times: int | None = None) -> Rule:  # fmt: skip
        rule = Rule(action, path=path, digest=digest, method=method, times=times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop every rule: pass-through from now on (requests already running keep their action)."""
        with self._lock:
            self._rules.clear()

    def decide(self, method: str, path: str) -> Request:
        """Record a request and pick its action: the first live matching rule's, else pass-through."""
        with self._lock:
            action: Action = PassThrough()
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    action = rule.action
                    break
            req = Request(method, path, action)
            self._requests.append(req)
            return req

    # observation
    def requests(self, path: str | None = None, method: str | None = None) -> list[Request]:
        """Requests seen whose path contains `path` (and whose method is `method`), oldest first."""
        with self._lock:
            return [
                r
                for r in self._requests
                if (path is None or path in r.path) and (method is None or r.method == method.upper())
            ]

    def count(self, path: str | None = None, method: str | None = None) -> int:
        return len(self.requests(path, method))

    def body_bytes(self, path: str | None = None, method: str | None = None) -> int:
        """Response body bytes sent so far for matching requests (a running download included)."""
        return sum(r.body_bytes for r in self.requests(path, method))


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as registry clients expect

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request list is the log

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _proxy(self) -> None:
        path = self.path.split("?", 1)[0]
        req = self.owner.decide(self.command, path)
        action = req.action
        try:
            if isinstance(action, Status):
                self._answer(req, action)
            else:
                self._forward(req, action)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True  # the client or the upstream went away: nothing left to say
        finally:
            req.done = True

    def _answer(self, req: Request, action: Status) -> None:
        body = json.dumps(
            {"errors": [{"code": "UNAVAILABLE", "message": f"faultproxy: injected {action.code}"}]}
        ).encode()
        self._drain_request_body()
        self.send_response(action.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if action.retry_after is not None:
            self.send_header("Retry-After", action.retry_after)
        self.end_headers()
        req.status = action.code
        if self.command != "HEAD":
            self.wfile.write(body)
            req.body_bytes = len(body)

    def _drain_request_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            got = self.rfile.read(min(length, CHUNK))
            if not got:
                break
            length -= len(got)

    def _forward(self, req: Request, action: Action) -> None:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=self.owner.timeout)
        try:
            if self.headers.get("Transfer-Encoding"):
                self.send_error(501, "faultproxy: chunked request bodies are not supported")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            length = self.headers.get("Content-Length")
            body = _read_exactly(self.rfile, int(length)) if length else None
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            req.status = resp.status
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            has_body = self.command != "HEAD" and resp.status not in (204, 304)
            if has_body and resp.getheader("Content-Length") is None:
                # No length from the upstream: the body ends when the connection does.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if has_body:
                self._send_body(req, action, resp)
        finally:
            conn.close()

    def _send_body(self, req: Request, action: Action, resp: http.client.HTTPResponse) -> None:
        match = _CONTENT_RANGE.fullmatch((resp.getheader("Content-Range") or "").strip())
        offset = int(match.group(1)) if match and resp.status == 206 else 0
        limit = action.after if isinstance(action, Truncate | Reset) else None
        chunk_size = action.chunk if isinstance(action, Slow) else CHUNK
        for chunk in _chunks(resp, chunk_size):
            if isinstance(action, Corrupt):
                chunk = _flip(chunk, offset, action)
            if limit is not None and req.body_bytes + len(chunk) >= limit:
                self._write(req, chunk[: limit - req.body_bytes])
                self._cut(action)
                return
            self._write(req, chunk)
            offset += len(chunk)
            if isinstance(action, Slow):
                time.sleep(len(chunk) / action.bytes_per_s)
        if limit is not None:  # the body was shorter than the cut-off point: cut at its end anyway
            self._cut(action)

    def _write(self, req: Request, data: bytes) -> None:
        self.wfile.write(data)
        req.body_bytes += len(data)

    def _cut(self, action: Action) -> None:
        self.close_connection = True
        if isinstance(action, Reset):
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ConnectionResetError("client sent a shorter body than its Content-Length")
    return data


def _chunks(resp: http.client.HTTPResponse, size: int) -> Iterator[bytes]:
    while chunk := resp.read1(size):
        yield chunk


def _flip(chunk: bytes, offset: int, action: Corrupt) -> bytes:
    """`chunk` (starting at blob offset `offset`) with the bytes in [at, at + count) inverted."""
    start = max(action.at - offset, 0)
    end = min(action.at + action.count - offset, len(chunk))
    if start >= end:
        return chunk
    out = bytearray(chunk)
    for i in range(start, end):
        out[i] ^= 0xFF
    return bytes(out)


__all__ = ["Action", "Corrupt", "FaultProxy", "PassThrough", "Request", "Reset", "Rule", "Slow", "Status", "Truncate"]

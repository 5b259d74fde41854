"""A misbehaving HTTP reverse proxy for failure drills: put it between layerfill and an upstream registry and
tell it, request by request, to pass through, corrupt, truncate, reset, trickle, stall or fail.

    with FaultProxy("http://127.0.0.1:15000") as fp:
        fp.add(Corrupt(), digest=layer_digest)            # every GET of that blob: same length, wrong bytes
        fp.add(Status(429, retry_after="1"), times=2)      # the next two requests of any path: 429
        ... route upstream_url=fp.url ...
        assert fp.count(f"/blobs/{layer_digest}") == 9

Rules are tried in the order added; the first that matches (and has not used up `times`) decides what
happens to a request; no match means pass-through. Every request is recorded with its status and the
body bytes actually sent, live, so a test can watch a download progress.

Token auth (`require_token`) puts registry token auth in front of everything: a request without the
current `Authorization: Bearer <token>` is answered 401 with a `WWW-Authenticate: Bearer realm=...`
challenge naming the proxy's own token endpoint, which hands out the token (to Basic credentials only, if
given). Rules apply to authorized requests and to token requests; `rotate_token()` revokes the token.

    auth = fp.require_token(username="u", password="p")
    ... layerfill fetches through fp.url with route credentials u/p ...
    assert auth.issued >= 1 and auth.challenged >= 1
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

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
_REPOSITORY_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags|referrers)/")


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


@dataclass(frozen=True)
class Stall:
    """Send `after` body bytes, then go silent for `seconds` (past the client's read timeout), then close."""

    after: int
    seconds: float

    def __post_init__(self) -> None:
        _check_int("Stall.after", self.after, 0)
        if not isinstance(self.seconds, int | float) or isinstance(self.seconds, bool) or self.seconds <= 0:
            raise ValueError(f"Stall.seconds must be a number > 0, got {self.seconds!r}")


Action = PassThrough | Corrupt | Truncate | Reset | Status | Slow | Stall


# What token auth did with a request (recorded as its action; not for `add`).
@dataclass(frozen=True)
class Challenged:
    """Answered 401 with a Bearer challenge: no token, or not the current one."""


@dataclass(frozen=True)
class TokenRequest:
    """A request to the token endpoint (answered with the token, or 401 for wrong Basic credentials)."""


@dataclass
class TokenAuth:
    """The proxy's registry token auth: what it asks for, the tokens it issued, and what it has done so far.

    Every grant is a fresh token. It is accepted until `rotate()` revokes all issued tokens, or for `max_age_s`
    after its issue when set: shorter than the `expires_in` announced to the client, this makes a client that
    caches its token meet a 401 now and then (a token revoked or expired early), race-free for a new token."""

    username: str | None = None
    password: str | None = None
    service: str = "faultproxy"
    expires_in: int = 300
    max_age_s: float | None = None
    realm_path: str = "/token"
    issued: int = 0  # tokens handed out
    refused: int = 0  # token requests with missing or wrong Basic credentials
    challenged: int = 0  # registry requests answered 401
    scopes: list[str] = field(default_factory=list)  # every scope asked for, in order
    _tokens: dict[str, float] = field(default_factory=dict, repr=False)  # token -> time.monotonic() of issue
    token: str | None = field(default=None, repr=False)  # the latest issued

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("TokenAuth needs both username and password, or neither")
        _check_int("TokenAuth.expires_in", self.expires_in, 1)
        if self.max_age_s is not None and (not isinstance(self.max_age_s, int | float) or self.max_age_s <= 0):
            raise ValueError(f"TokenAuth.max_age_s must be a number > 0 or None, got {self.max_age_s!r}")
        if not self.realm_path.startswith("/") or self.realm_path.startswith("/v2/"):
            raise ValueError(f"TokenAuth.realm_path must be a path outside /v2/, got {self.realm_path!r}")

    def basic_ok(self, header: str | None) -> bool:
        if self.username is None:
            return True
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header is not None and secrets.compare_digest(header.strip(), f"Basic {expected}")

    def bearer_ok(self, header: str | None) -> bool:
        scheme, _, value = (header or "").strip().partition(" ")
        issued_at = self._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if issued_at is None:
            return False
        return self.max_age_s is None or time.monotonic() - issued_at < self.max_age_s

    def issue(self) -> str:
        self.token = secrets.token_hex(16)
        self._tokens[self.token] = time.monotonic()
        self.issued += 1
        return self.token

    def rotate(self) -> None:
        self._tokens.clear()


AuthStep = Challenged | TokenRequest


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
    action: Action | AuthStep
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
        self._closing = threading.Event()  # wakes stalled responses when the proxy closes
        self.auth: TokenAuth | None = None
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
        self._closing.set()
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

    def require_token(self, username: str | None = None, password: str | None = None, *, service: str = "faultproxy",
                      expires_in: int = 300, max_age_s: float | None = None) -> TokenAuth:  # fmt: skip
        """From now on answer 401 until an issued bearer token is presented; serve tokens at `/token` (to
        `username`/`password` as HTTP Basic only, when given). See TokenAuth for `max_age_s`."""
        auth = TokenAuth(username=username, password=password, service=service, expires_in=expires_in,
                         max_age_s=max_age_s)  # fmt: skip
        with self._lock:
            self.auth = auth
        return auth

    def rotate_token(self) -> None:
        """Revoke every issued token: requests still carrying one get 401 and must fetch a new one."""
        with self._lock:
            if self.auth is None:
                raise RuntimeError("rotate_token() needs require_token() first")
            self.auth.rotate()

    def realm(self) -> str:
        return f"{self.url}{self.auth.realm_path if self.auth else '/token'}"

    def clear(self) -> None:
        """Drop every rule: pass-through from now on (requests already running keep their action)."""
        with self._lock:
            self._rules.clear()

    def authorize(self, method: str, path: str, authorization: str | None) -> Request | None:
        """Under token auth: a recorded 401 for a request without the current token (None: let it through)."""
        with self._lock:
            auth = self.auth
            if auth is None or path == auth.realm_path or auth.bearer_ok(authorization):
                return None
            auth.challenged += 1
            req = Request(method, path, Challenged())
            self._requests.append(req)
            return req

    def grant(self, authorization: str | None, query: str) -> str | None:
        """The token for a token request with acceptable credentials (None: refuse it); counts either way."""
        with self._lock:
            auth = self.auth
            assert auth is not None
            auth.scopes.extend(parse_qs(query).get("scope", []))
            if not auth.basic_ok(authorization):
                auth.refused += 1
                return None
            return auth.issue()

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


# What supply-chain discovery asks an upstream (issue 16): the referrers API and the tags of the referrers tag
# schema and of cosign (`sha256-<hex>`, `.sig`, `.att`, `.sbom`). Tests that count an image's upstream cost
# tell these apart from manifest and blob fetches.
_REFERRER_LOOKUP = re.compile(
    r"/(?:referrers/[a-z0-9]+:[0-9a-f]+|manifests/[a-z0-9]+-[0-9a-f]+(?:\.(?:sig|att|sbom))?)$"
)


def is_referrer_lookup(request: Request) -> bool:
    """True for a request supply-chain discovery makes (referrers API, referrers tag schema, cosign tags)."""
    return _REFERRER_LOOKUP.search(request.path.split("?", 1)[0]) is not None


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
        path, _, query = self.path.partition("?")
        req = self.owner.authorize(self.command, path, self.headers.get("Authorization"))
        if req is None:
            req = self.owner.decide(self.command, path)
        action = req.action
        auth = self.owner.auth
        try:
            if isinstance(action, Challenged):
                self._challenge(req, path)
            elif isinstance(action, Status):
                self._answer(req, action)
            elif auth is not None and path == auth.realm_path:
                self._token(req, query)
            else:
                self._forward(req, action)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True  # the client or the upstream went away: nothing left to say
        finally:
            req.done = True

    def _answer(self, req: Request, action: Status) -> None:
        body = {"errors": [{"code": "UNAVAILABLE", "message": f"faultproxy: injected {action.code}"}]}
        headers = {"Retry-After": action.retry_after} if action.retry_after is not None else {}
        self._json(req, action.code, body, headers)

    def _challenge(self, req: Request, path: str) -> None:
        auth = self.owner.auth
        assert auth is not None
        match = _REPOSITORY_PATH.match(path)
        scope = f',scope="repository:{match.group("name")}:pull"' if match else ""
        challenge = f'Bearer realm="{self.owner.realm()}",service="{auth.service}"{scope}'
        self._json(req, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "faultproxy: token required"}]},
                   {"WWW-Authenticate": challenge})  # fmt: skip

    def _token(self, req: Request, query: str) -> None:
        """Token endpoint: only a Status rule applies to it (handled before); anything else gets the token."""
        req.action = TokenRequest()
        token = self.owner.grant(self.headers.get("Authorization"), query)
        if token is None:
            body = {"errors": [{"code": "UNAUTHORIZED", "message": "faultproxy: wrong credentials"}]}
            self._json(req, 401, body, {"WWW-Authenticate": 'Basic realm="faultproxy"'})
            return
        auth = self.owner.auth
        assert auth is not None
        self._json(req, 200, {"token": token, "expires_in": auth.expires_in})

    def _json(self, req: Request, code: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self._drain_request_body()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        req.status = code
        if self.command != "HEAD":
            self.wfile.write(data)
            req.body_bytes = len(data)

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
            if self.owner.auth is not None:  # our token means nothing to the upstream
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
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
        limit = action.after if isinstance(action, Truncate | Reset | Stall) else None
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
        if isinstance(action, Stall):
            self.wfile.flush()
            self.owner._closing.wait(action.seconds)  # silent: the client's read timeout should fire first
            return
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


__all__ = [
    "Action",
    "Challenged",
    "Corrupt",
    "FaultProxy",
    "PassThrough",
    "Request",
    "Reset",
    "Rule",
    "Slow",
    "Stall",
    "Status",
    "TokenAuth",
    "TokenRequest",
    "Truncate",
]

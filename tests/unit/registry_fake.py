"""A small in-process registry (http.server on 127.0.0.1, port 0) for the remote client's tests.

It speaks enough of the distribution API to exercise the client for real over sockets: manifests,
blobs (with Range), Basic or token auth with a realm, scripted faults per path (status codes with
headers, bodies cut mid-stream, lying Content-Length), and a redirect of blob GETs to "storage" on
another host name (`localhost` vs `127.0.0.1`: the same server, but a different origin for the client).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass
class Fault:
    """What to do instead of (or to) the normal answer, for one request to a path."""

    status: int | None = None  # answer this status with `headers`/`body` instead
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    truncate_after: int | None = None  # send the real answer but close after this many body bytes
    content_length: int | None = None  # announce this Content-Length instead of the real one
    ignore_range: bool = False  # answer 200 with the full body even when a Range was asked for
    no_length: bool = False  # send no Content-Length: the body ends when the connection closes
    extra_headers: dict[str, str] = field(default_factory=dict)  # added to the real answer


@dataclass
class Seen:
    method: str
    path: str
    host: str
    headers: dict[str, str]


class FakeRegistry:
    def __init__(
        self,
        *,
        auth: str = "none",
        username: str = "alice",
        password: str = "pa55-w0rd-secret",
        realm_host: str = "127.0.0.1",
        token_requires_credentials: bool = False,
        token_field: str = "token",
        expires_in: int | None = None,
        storage_host: str | None = None,
        delay: float = 0.0,
    ) -> None:
        assert auth in ("none", "basic", "bearer")
        self.auth = auth
        self.username = username
        self.password = password
        self.realm_host = realm_host
        self.token_requires_credentials = token_requires_credentials
        self.token_field = token_field
        self.expires_in = expires_in
        self.storage_host = storage_host
        self.delay = delay
        self.realm_url: str | None = None  # overrides the realm announced in challenges
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.faults: dict[str, deque[Fault]] = {}
        self.seen: list[Seen] = []
        self.tokens: dict[str, str] = {}  # token -> scope it was issued for
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- content and script -------------------------------------------------------------------------

    def add_manifest(self, repository: str, content: bytes, media_type: str = MANIFEST_TYPE, tag: str = "") -> str:
        digest = digest_of(content)
        self.manifests[(repository, digest)] = (content, media_type)
        if tag:
            self.manifests[(repository, tag)] = (content, media_type)
        return digest

    def add_blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[(repository, digest)] = data
        return digest

    def script(self, path: str, *faults: Fault) -> None:
        """Faults for the next requests to `path` (query ignored), consumed one per request."""
        self.faults.setdefault(path, deque()).extend(faults)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(path_prefix) and (method is None or s.method == method)]

    # -- behaviour ----------------------------------------------------------------------------------

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(path)
            return queue.popleft() if queue else None

    def basic_ok(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def challenge(self, scope: str | None) -> str:
        if self.auth == "basic":
            return 'Basic realm="fake"'
        realm = self.realm_url or f"http://{self.realm_host}:{self.port}/token"
        text = f'Bearer realm="{realm}",service="fake-registry"'
        return text + (f',scope="{scope}"' if scope else "")

    def authorized(self, header: str | None, scope: str | None) -> bool:
        if self.auth == "none":
            return True
        if self.auth == "basic":
            return self.basic_ok(header)
        if not header or not header.startswith("Bearer "):
            return False
        with self._lock:
            granted = self.tokens.get(header[len("Bearer ") :])
        return granted is not None and (scope is None or scope in granted.split())

    def issue_token(self, scopes: list[str]) -> str:
        token = "tok-" + secrets.token_hex(16)
        with self._lock:
            self.tokens[token] = " ".join(scopes)
        return token


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients in these tests drop connections on purpose (discarded responses, cut bodies).
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _handler_for(registry: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._handle()

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            with registry._lock:
                registry.seen.append(
                    Seen(self.command, self.path, self.headers.get("Host", ""), dict(self.headers.items()))
                )
                registry.in_flight += 1
                registry.max_in_flight = max(registry.max_in_flight, registry.in_flight)
            try:
                if registry.delay:
                    time.sleep(registry.delay)
                self._route(parts.path, parse_qs(parts.query))
            finally:
                with registry._lock:
                    registry.in_flight -= 1

        def _route(self, path: str, query: dict[str, list[str]]) -> None:
            if path == "/token":
                return self._token(path, query)
            if path.startswith("/storage/"):
                return self._serve_blob(path, path[len("/storage/") :], None)
            if not path.startswith("/v2/"):
                return self._send(404, b"", {})
            name, kind, ref = _split_v2(path)
            scope = f"repository:{name}:pull" if name else None
            if not registry.authorized(self.headers.get("Authorization"), scope):
                return self._send(
                    401,
                    b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                    {"WWW-Authenticate": registry.challenge(scope)},
                )
            if kind is None:
                return self._send(200, b"{}", {"Content-Type": "application/json"}, path=path)
            if kind == "manifests":
                return self._manifest(path, name, ref)
            if registry.storage_host and self.command == "GET" and (name, ref) in registry.blobs:
                if (fault := registry._next_fault(path)) is not None and fault.status is not None:
                    return self._send(fault.status, fault.body, fault.headers)
                location = f"http://{registry.storage_host}:{registry.port}/storage/{name}@{ref}"
                return self._send(307, b"", {"Location": location + "?X-Amz-Signature=topsecretsignature"})
            return self._serve_blob(path, f"{name}@{ref}", None)

        def _manifest(self, path: str, name: str, ref: str) -> None:
            found = registry.manifests.get((name, ref))
            if found is None:
                body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
                return self._send(404, body, {"Content-Type": "application/json"}, path=path)
            content, media_type = found
            headers = {"Content-Type": media_type, "Docker-Content-Digest": digest_of(content)}
            return self._send(200, content, headers, path=path)

        def _serve_blob(self, path: str, key: str, _unused: object) -> None:
            name, _, digest = key.partition("@")
            data = registry.blobs.get((name, digest))
            if data is None:
                body = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}'
                return self._send(404, body, {"Content-Type": "application/json"}, path=path)
            fault = registry._next_fault(path)
            if fault is not None and fault.status is not None:
                return self._send(fault.status, fault.body, fault.headers)
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes=") and wanted.endswith("-") and not (fault and fault.ignore_range):
                start = int(wanted[len("bytes=") : -1])
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                return self._send(206, data[start:], headers, fault=fault)
            return self._send(200, data, {"Content-Type": "application/octet-stream"}, fault=fault)

        def _token(self, path: str, query: dict[str, list[str]]) -> None:
            fault = registry._next_fault(path)
            if fault is not None and fault.status is not None:
                return self._send(fault.status, fault.body, fault.headers)
            header = self.headers.get("Authorization")
            if header is not None and not registry.basic_ok(header):
                return self._send(401, b'{"details":"bad credentials"}', {})
            if registry.token_requires_credentials and header is None:
                return self._send(401, b'{"details":"credentials required"}', {})
            token = registry.issue_token(query.get("scope", []))
            answer: dict[str, object] = {registry.token_field: token}
            if registry.expires_in is not None:
                answer["expires_in"] = registry.expires_in
            return self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str],
            *,
            path: str | None = None,
            fault: Fault | None = None,
        ) -> None:
            if fault is None and path is not None:
                fault = registry._next_fault(path)
                if fault is not None and fault.status is not None:
                    status, body, headers = fault.status, fault.body, fault.headers
            length = len(body)
            if fault is not None and fault.content_length is not None:
                length = fault.content_length
            self.send_response(status)
            for key, value in {**headers, **(fault.extra_headers if fault else {})}.items():
                self.send_header(key, value)
            if fault is not None and fault.no_length:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command != "HEAD":
                cut = fault.truncate_after if fault is not None else None
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
            if length != len(body) or (fault is not None and fault.truncate_after is not None):
                self.close_connection = True

    return Handler


def _split_v2(path: str) -> tuple[str, str | None, str]:
    """('library/alpine', 'manifests', 'latest') for /v2/library/alpine/manifests/latest; ('', None, '')
    for /v2/."""
    rest = path[len("/v2/") :]
    for kind in ("manifests", "blobs"):
        marker = f"/{kind}/"
        if marker in rest:
            name, ref = rest.rsplit(marker, 1)
            return name, kind, ref
    return "", None, ""


def fast_retry(max_attempts: int = 4, sleeps: list[float] | None = None, **overrides: float) -> object:
    """A RetryPolicy with ~1 ms backoff; `sleeps`, when given, records waits instead of sleeping."""
    from layerfill.remote.transport.retry import RetryPolicy

    sleep = sleeps.append if sleeps is not None else time.sleep
    settings = {"backoff_base": 0.001, "backoff_max": 0.01, **overrides}
    return RetryPolicy(max_attempts=max_attempts, sleep=sleep, **settings)  # type: ignore[arg-type]

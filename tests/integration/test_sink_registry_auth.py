"""RegistrySink against an in-process registry that demands Bearer tokens obtained with Basic credentials
(as Quay and Harbor do), and that can serve corrupt content or fail, to check the sink's error mapping."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from layerfill.oci import mediatypes as mt
from layerfill.remote.client import RegistryClient
from layerfill.remote.transport.retry import RetryPolicy
from layerfill.sinks.base import BlobSpec, Presence, SinkError, SinkIntegrityError, SinkUnavailable, StoreResult
from layerfill.sinks.registry import RegistrySink

pytestmark = pytest.mark.integration

USER, PASSWORD = "robot", "s3cret"
REPO = "org/app"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    blobs: dict[str, bytes] = field(default_factory=dict)  # path after /v2/ -> body
    content_types: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # paths answered with 503
    tokens_issued: list[str] = field(default_factory=list)
    authorized_gets: list[str] = field(default_factory=list)
    accept_headers: list[str] = field(default_factory=list)
    url: str = ""


def make_handler(state: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/token":
                return self._token(parse_qs(parts.query))
            path = parts.path.removeprefix("/v2/")
            if self.headers.get("Authorization", "") not in {f"Bearer {t}" for t in state.tokens_issued}:
                scope = f"repository:{REPO}:pull"
                challenge = f'Bearer realm="{state.url}/token",service="fake",scope="{scope}"'
                return self._send(401, b"{}", {"WWW-Authenticate": challenge})
            state.authorized_gets.append(path)
            state.accept_headers.append(self.headers.get("Accept", ""))
            if path in state.failing:
                return self._send(503, b"busy")
            if path not in state.blobs:
                return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}')
            content_type = state.content_types.get(path, "application/octet-stream")
            return self._send(200, state.blobs[path], {"Content-Type": content_type})

        def _token(self, query: dict[str, list[str]]) -> None:
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected or query.get("service") != ["fake"]:
                return self._send(401, b"{}")
            token = f"tok-{len(state.tokens_issued)}"
            state.tokens_issued.append(token)
            return self._send(200, json.dumps({"token": token, "expires_in": 300}).encode())

    return Handler


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    state = FakeRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def warm_sink(registry: FakeRegistry, password: str = PASSWORD) -> RegistrySink:
    no_wait = RetryPolicy(max_attempts=2, sleep=lambda _s: None)
    return RegistrySink(registry.url, client=RegistryClient(registry.url, (USER, password), retry=no_wait))


def never_opened() -> Iterator[bytes]:
    raise AssertionError("the warm-through sink must not open the upstream source")


def test_blob_and_manifest_are_fetched_with_a_token(registry: FakeRegistry) -> None:
    blob = b"layer bytes" * 1000
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST}).encode()
    registry.blobs[f"{REPO}/blobs/{sha256(blob)}"] = blob
    registry.blobs[f"{REPO}/manifests/{sha256(manifest)}"] = manifest
    registry.content_types[f"{REPO}/manifests/{sha256(manifest)}"] = mt.OCI_MANIFEST

    with warm_sink(registry) as sink:
        assert sink.blob_presence(REPO, sha256(blob)) is Presence.UNKNOWN
        assert sink.manifest_presence(REPO, sha256(manifest)) is Presence.UNKNOWN
        spec = BlobSpec(sha256(blob), len(blob), mt.OCI_LAYER_GZIP)
        assert sink.store_blob(REPO, spec, never_opened) == StoreResult("fetched", len(blob))  # type: ignore[arg-type]
        result = sink.store_manifest(REPO, sha256(manifest), mt.OCI_MANIFEST, manifest)
        assert result == StoreResult("fetched", len(manifest))

    assert registry.tokens_issued  # the Basic credentials bought a token
    assert registry.authorized_gets == [f"{REPO}/blobs/{sha256(blob)}", f"{REPO}/manifests/{sha256(manifest)}"]
    manifest_accept = registry.accept_headers[-1]
    assert all(t in manifest_accept for t in (mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST))


def test_corrupt_content_is_an_integrity_error(registry: FakeRegistry) -> None:
    blob = b"the real layer"
    registry.blobs[f"{REPO}/blobs/{sha256(blob)}"] = b"something else"
    manifest = b'{"schemaVersion": 2}'
    registry.blobs[f"{REPO}/manifests/{sha256(manifest)}"] = b'{"schemaVersion": 3}'
    with warm_sink(registry) as sink:
        with pytest.raises(SinkIntegrityError):
            sink.store_blob(REPO, BlobSpec(sha256(blob), 14, None), never_opened)  # type: ignore[arg-type]
        with pytest.raises(SinkIntegrityError):
            sink.store_manifest(REPO, sha256(manifest), mt.OCI_MANIFEST, manifest)


def test_refused_credentials_are_not_transient(registry: FakeRegistry) -> None:
    blob = b"x"
    registry.blobs[f"{REPO}/blobs/{sha256(blob)}"] = blob
    with warm_sink(registry, password="wrong") as sink, pytest.raises(SinkError) as info:
        sink.store_blob(REPO, BlobSpec(sha256(blob), 1, None), never_opened)  # type: ignore[arg-type]
    assert not isinstance(info.value, SinkUnavailable | SinkIntegrityError)


def test_registry_failure_is_unavailable(registry: FakeRegistry) -> None:
    blob = b"x"
    path = f"{REPO}/blobs/{sha256(blob)}"
    registry.blobs[path] = blob
    registry.failing.add(path)
    with warm_sink(registry) as sink, pytest.raises(SinkUnavailable, match="503"):
        sink.store_blob(REPO, BlobSpec(sha256(blob), 1, None), never_opened)  # type: ignore[arg-type]

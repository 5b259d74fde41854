"""ClairClient against a scripted Clair (http.server on 127.0.0.1, port 0): real sockets, Clair's answers as
v4.9 gives them (synchronous index POST, 500 + stored IndexError report, 202 from a matcher without data)."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from layerfill.consumers.scanner.clair import ClairClient
from layerfill.consumers.scanner.errors import ClairRejected, ClairUnavailable
from layerfill.kafka.classify import describe

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64
LAYER = "sha256:" + "b" * 64
STATE = "fake-indexer-state-1"
PACKAGES = {"1": {"id": "1", "name": "openssl", "version": "3.0.11-1~deb12u2"}, "2": {"id": "2", "name": "libc6"}}


@dataclass
class Scripted:
    """One scripted answer to the next index POST."""

    status: int
    message: str = ""
    stored_state: str | None = None  # also store a report in this state (e.g. IndexError after a 500)


@dataclass
class FakeClair:
    packages: dict[str, Any] = field(default_factory=lambda: dict(PACKAGES))
    vulnerabilities: dict[str, Any] = field(default_factory=dict)
    matcher_ready: bool = True
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: deque[Scripted] = field(default_factory=deque)
    # States the stored report goes through on successive GETs (e.g. still indexing, then finished).
    get_states: deque[str] = field(default_factory=deque)
    posts: list[dict[str, Any]] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)
    url: str = ""

    def report(self, digest: str, state: str, err: str = "") -> dict[str, Any]:
        packages = self.packages if state == "IndexFinished" else {}
        return {"manifest_hash": digest, "state": state, "packages": packages, "success": not err, "err": err}


def _handler(fake: FakeClair) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, doc: object = None, headers: dict[str, str] | None = None) -> None:
            body = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.posts.append(body)
            digest = body["hash"]
            etag = {"etag": f'"{STATE}"'}
            if fake.script:
                s = fake.script.popleft()
                if s.stored_state:
                    err = s.message if s.stored_state == "IndexError" else ""
                    fake.reports[digest] = fake.report(digest, s.stored_state, err)
                if s.status in (200, 201):
                    self._send(s.status, fake.reports[digest], etag)
                else:
                    self._send(s.status, {"code": "error", "message": s.message}, etag)
                return
            fake.reports[digest] = fake.report(digest, "IndexFinished")
            self._send(201, fake.reports[digest], etag)

        def do_GET(self) -> None:
            fake.gets.append(self.path)
            if self.path == "/indexer/api/v1/index_state":
                self._send(200, {"state": STATE})
                return
            digest = self.path.rsplit("/", 1)[-1]
            if self.path.startswith("/indexer/api/v1/index_report/"):
                if digest not in fake.reports:
                    self._send(404, {"code": "not-found", "message": "index report not found"})
                    return
                if fake.get_states:
                    fake.reports[digest] = fake.report(digest, fake.get_states.popleft())
                self._send(200, fake.reports[digest])
            elif self.path.startswith("/matcher/api/v1/vulnerability_report/"):
                if not fake.matcher_ready:
                    self._send(202)
                elif digest not in fake.reports:
                    self._send(404, {"code": "not-found", "message": "index report not found"})
                else:
                    self._send(200, {"manifest_hash": digest, "vulnerabilities": fake.vulnerabilities})
            else:
                self._send(404, {"code": "not-found", "message": self.path})

    return Handler


@contextmanager
def running_fake_clair() -> Iterator[FakeClair]:
    fake = FakeClair()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_clair() -> Iterator[FakeClair]:
    with running_fake_clair() as fake:
        yield fake


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def manifest(digest: str = DIGEST) -> dict[str, Any]:
    return {"hash": digest, "layers": [{"hash": LAYER, "uri": "http://s3/x?X-Amz-Signature=secret", "headers": {}}]}


def test_index_returns_the_final_report_and_indexer_state(fake_clair: FakeClair) -> None:
    out = ClairClient(fake_clair.url).index(manifest())
    assert out.summary.state == "IndexFinished"
    assert out.summary.package_names == {"openssl", "libc6"}
    assert out.indexer_state == STATE
    assert fake_clair.posts == [manifest()]


def test_index_error_after_500_is_read_from_the_stored_report(fake_clair: FakeClair) -> None:
    fake_clair.script.append(Scripted(500, "fetcher: request failed: connection refused", stored_state="IndexError"))
    out = ClairClient(fake_clair.url).index(manifest())
    assert out.summary.state == "IndexError"
    assert out.summary.error == "fetcher: request failed: connection refused"


def test_500_without_a_report_is_clair_unavailable(fake_clair: FakeClair) -> None:
    fake_clair.script.append(Scripted(500, "database is down"))
    with pytest.raises(ClairUnavailable, match="database is down"):
        ClairClient(fake_clair.url).index(manifest())


def test_500_with_a_stale_intermediate_report_is_clair_unavailable(fake_clair: FakeClair) -> None:
    fake_clair.script.append(Scripted(500, "interrupted", stored_state="FetchLayers"))
    with pytest.raises(ClairUnavailable, match="interrupted"):
        ClairClient(fake_clair.url).index(manifest())


def test_4xx_is_rejected_with_clairs_message(fake_clair: FakeClair) -> None:
    fake_clair.script.append(Scripted(400, "failed to start scan: tarfs: format error"))
    with pytest.raises(ClairRejected, match="HTTP 400: failed to start scan: tarfs: format error"):
        ClairClient(fake_clair.url).index(manifest())


def test_429_is_unavailable_not_rejected(fake_clair: FakeClair) -> None:
    fake_clair.script.append(Scripted(429, "too many requests"))
    with pytest.raises(ClairUnavailable):
        ClairClient(fake_clair.url).index(manifest())


def test_clair_down_is_unavailable() -> None:
    with pytest.raises(ClairUnavailable, match=r"index request for sha256:a+ failed"):
        ClairClient(closed_port_url()).index(manifest())


def test_non_final_answer_is_polled_with_backoff_until_final(fake_clair: FakeClair) -> None:
    fake_clair.script.append(Scripted(201, stored_state="FetchLayers"))
    fake_clair.get_states.extend(["ScanLayers", "IndexFinished"])
    slept: list[float] = []
    client = ClairClient(fake_clair.url, poll_interval_s=0.5, poll_max_interval_s=0.75, sleep=slept.append)
    out = client.index(manifest())
    assert out.summary.state == "IndexFinished"
    assert slept == [0.5, 0.75]
    assert out.indexer_state == STATE


def test_polling_gives_up_at_the_deadline(fake_clair: FakeClair) -> None:
    fake_clair.script.append(Scripted(201, stored_state="FetchLayers"))
    fake_clair.get_states.extend(["ScanLayers"] * 100)
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    client = ClairClient(fake_clair.url, deadline_s=10, poll_interval_s=1, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(ClairUnavailable, match="not final within 10s"):
        client.index(manifest())
    assert now[0] == 10


def test_vulnerability_report_is_none_while_the_matcher_has_no_data(fake_clair: FakeClair) -> None:
    client = ClairClient(fake_clair.url)
    client.index(manifest())
    fake_clair.matcher_ready = False
    assert client.vulnerability_report(DIGEST) is None
    fake_clair.matcher_ready = True
    assert client.vulnerability_report(DIGEST) == {"manifest_hash": DIGEST, "vulnerabilities": {}}


def test_vulnerability_report_of_an_unknown_manifest_is_unavailable(fake_clair: FakeClair) -> None:
    with pytest.raises(ClairUnavailable, match="no index report"):
        ClairClient(fake_clair.url).vulnerability_report(DIGEST)


def test_presigned_signatures_never_reach_error_texts(fake_clair: FakeClair) -> None:
    leak = 'fetcher: Get "http://127.0.0.1:19000/registry/blob?X-Amz-Signature=abcdef&X-Amz-Credential=key": EOF'
    fake_clair.script.append(Scripted(500, leak))
    with pytest.raises(ClairUnavailable) as info:
        ClairClient(fake_clair.url).index(manifest())
    text = describe(info.value)
    assert "abcdef" not in text and "X-Amz-Signature" in text

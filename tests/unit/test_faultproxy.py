"""The fault proxy against a tiny local HTTP origin: each fault does exactly what it says, and nothing else."""

from __future__ import annotations

import hashlib
import http.client
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from layerfill.remote.client import RegistryClient
from layerfill.remote.errors import Unauthorized
from tests.support.faultproxy import (
    Challenged,
    Corrupt,
    FaultProxy,
    PassThrough,
    Reset,
    Slow,
    Stall,
    Status,
    TokenAuth,
    TokenRequest,
    Truncate,
)

pytestmark = pytest.mark.unit

BLOB = bytes(range(256)) * 1024  # 256 KiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
OTHER = b"other blob " * 100
OTHER_DIGEST = "sha256:" + hashlib.sha256(OTHER).hexdigest()
BLOB_PATH = f"/v2/demo/app/blobs/{DIGEST}"
OTHER_PATH = f"/v2/demo/app/blobs/{OTHER_DIGEST}"


class _Origin(BaseHTTPRequestHandler):
    """Serves two blobs (with Range support), an unsized body, and echoes request bodies."""

    protocol_version = "HTTP/1.1"
    hits: list[tuple[str, str]]
    authorizations: list[str | None]

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append((self.command, self.path))
        self.authorizations.append(self.headers.get("Authorization"))
        if self.path == "/unsized":
            # A close-delimited body: no Content-Length, the connection end marks the end.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.close_connection = True
            return
        data = {BLOB_PATH: BLOB, OTHER_PATH: OTHER}.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, start = 200, 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Docker-Content-Digest", DIGEST if data is BLOB else OTHER_DIGEST)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[start:])

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        self.hits.append((self.command, self.path))
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])


@pytest.fixture
def origin() -> Iterator[tuple[str, list[tuple[str, str]], list[str | None]]]:
    hits: list[tuple[str, str]] = []
    handler = type("Origin", (_Origin,), {"hits": hits, "authorizations": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits, handler.authorizations
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(origin) -> Iterator[FaultProxy]:
    with FaultProxy(origin[0]) as fp:
        yield fp


def _raw_get(fp: FaultProxy, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(fp.address, timeout=10)
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def test_pass_through_keeps_status_headers_and_body_and_counts_per_path(proxy: FaultProxy, origin) -> None:
    with requests.Session() as s:  # keep-alive: several requests on one connection
        for _ in range(2):
            r = s.get(proxy.url + BLOB_PATH, timeout=10)
            assert r.status_code == 200
            assert r.content == BLOB
            assert r.headers["Docker-Content-Digest"] == DIGEST
        assert s.head(proxy.url + OTHER_PATH, timeout=10).headers["Content-Length"] == str(len(OTHER))
        assert s.get(proxy.url + "/v2/missing", timeout=10).status_code == 404
    assert proxy.count(BLOB_PATH) == 2
    assert proxy.count(OTHER_PATH) == 1
    assert proxy.count(OTHER_PATH, method="GET") == 0
    assert proxy.count() == 4
    assert proxy.body_bytes(BLOB_PATH) == 2 * len(BLOB)
    assert all(isinstance(r.action, PassThrough) for r in proxy.requests())
    deadline = time.monotonic() + 5
    while not all(r.done for r in proxy.requests()) and time.monotonic() < deadline:
        time.sleep(0.01)  # `done` is set just after the last byte went out
    assert all(r.done for r in proxy.requests())
    assert len(origin[1]) == 4


def test_corrupt_flips_bytes_of_the_named_digest_only_and_keeps_the_length(proxy: FaultProxy) -> None:
    proxy.add(Corrupt(at=1000, count=3), digest=DIGEST)
    bad = requests.get(proxy.url + BLOB_PATH, timeout=10)
    assert bad.status_code == 200
    assert len(bad.content) == len(BLOB) == int(bad.headers["Content-Length"])
    diff = [i for i in range(len(BLOB)) if bad.content[i] != BLOB[i]]
    assert diff == [1000, 1001, 1002]
    assert all(bad.content[i] == BLOB[i] ^ 0xFF for i in diff)
    assert hashlib.sha256(bad.content).hexdigest() != DIGEST.split(":")[1]
    assert requests.get(proxy.url + OTHER_PATH, timeout=10).content == OTHER


def test_corrupt_offsets_are_blob_offsets_in_ranged_responses(proxy: FaultProxy) -> None:
    proxy.add(Corrupt(at=100_000), digest=DIGEST)
    r = requests.get(proxy.url + BLOB_PATH, headers={"Range": "bytes=99990-"}, timeout=10)
    assert r.status_code == 206
    assert r.content[10] == BLOB[100_000] ^ 0xFF
    assert r.content[:10] == BLOB[99_990:100_000] and r.content[11:] == BLOB[100_001:]


def test_truncate_sends_fewer_bytes_than_the_announced_length_then_closes(proxy: FaultProxy) -> None:
    proxy.add(Truncate(after=70_000), digest=DIGEST)
    resp = _raw_get(proxy, BLOB_PATH)
    assert resp.getheader("Content-Length") == str(len(BLOB))
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == BLOB[:70_000]
    assert proxy.body_bytes(BLOB_PATH) == 70_000


def test_reset_aborts_the_connection_mid_body(proxy: FaultProxy) -> None:
    proxy.add(Reset(after=1000), digest=DIGEST)
    resp = _raw_get(proxy, BLOB_PATH)
    assert resp.status == 200
    time.sleep(0.2)  # let the RST arrive before reading
    with pytest.raises(ConnectionResetError):
        resp.read()
    assert proxy.body_bytes(BLOB_PATH) == 1000


@pytest.mark.parametrize("code", [500, 503])
def test_status_answers_without_asking_the_upstream(proxy: FaultProxy, origin, code: int) -> None:
    proxy.add(Status(code), path=r"/blobs/")
    r = requests.get(proxy.url + BLOB_PATH, timeout=10)
    assert r.status_code == code
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "Retry-After" not in r.headers
    assert origin[1] == []
    assert proxy.requests(BLOB_PATH)[0].status == code


def test_429_with_retry_after_for_a_limited_number_of_requests(proxy: FaultProxy) -> None:
    proxy.add(Status(429, retry_after="2"), method="GET", times=2)
    got = [requests.get(proxy.url + BLOB_PATH, timeout=10) for _ in range(3)]
    assert [r.status_code for r in got] == [429, 429, 200]
    assert got[0].headers["Retry-After"] == "2"
    assert got[2].content == BLOB
    assert requests.head(proxy.url + BLOB_PATH, timeout=10).status_code == 200  # HEAD never matched


def test_slow_trickles_the_body_intact(proxy: FaultProxy) -> None:
    proxy.add(Slow(bytes_per_s=512 * 1024, chunk=16 * 1024), digest=DIGEST)
    started = time.monotonic()
    resp = _raw_get(proxy, BLOB_PATH)
    time.sleep(0.2)
    assert 0 < proxy.body_bytes(BLOB_PATH) < len(BLOB)  # visibly in progress
    assert resp.read() == BLOB
    assert time.monotonic() - started >= 0.45  # 256 KiB at 512 KiB/s
    fast = time.monotonic()
    assert requests.get(proxy.url + OTHER_PATH, timeout=10).content == OTHER
    assert time.monotonic() - fast < 0.4


def test_first_matching_rule_wins_and_clear_restores_pass_through(proxy: FaultProxy) -> None:
    proxy.add(Status(503), digest=DIGEST, times=1)
    proxy.add(Status(500), path=r"/blobs/")
    assert requests.get(proxy.url + BLOB_PATH, timeout=10).status_code == 503
    assert requests.get(proxy.url + BLOB_PATH, timeout=10).status_code == 500
    proxy.clear()
    assert requests.get(proxy.url + BLOB_PATH, timeout=10).content == BLOB


def test_unsized_bodies_and_request_bodies_are_forwarded(proxy: FaultProxy) -> None:
    assert requests.get(proxy.url + "/unsized", timeout=10).content == b"x" * 1000
    r = requests.put(proxy.url + "/v2/demo/app/blobs/uploads/x", data=b"abcdef", timeout=10)
    assert (r.status_code, r.content) == (201, b"fedcba")


def test_stall_sends_some_bytes_then_goes_silent_past_the_read_timeout(proxy: FaultProxy) -> None:
    proxy.add(Stall(after=5000, seconds=30), digest=DIGEST, times=1)
    conn = http.client.HTTPConnection(proxy.address, timeout=0.5)
    conn.request("GET", BLOB_PATH)
    resp = conn.getresponse()
    assert resp.getheader("Content-Length") == str(len(BLOB))
    assert resp.read(5000) == BLOB[:5000]
    with pytest.raises(TimeoutError):
        resp.read(1)
    conn.close()
    assert proxy.body_bytes(BLOB_PATH) == 5000
    assert requests.get(proxy.url + BLOB_PATH, timeout=10).content == BLOB  # `times` used up


def test_token_auth_answers_401_with_a_bearer_challenge_until_the_token_is_presented(proxy: FaultProxy, origin) -> None:
    auth = proxy.require_token(service="reg")
    r = requests.get(proxy.url + BLOB_PATH, timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (
        f'Bearer realm="{proxy.url}/token",service="reg",scope="repository:demo/app:pull"'
    )
    assert requests.get(proxy.url + "/v2/", timeout=10).headers["WWW-Authenticate"] == (
        f'Bearer realm="{proxy.url}/token",service="reg"'
    )
    assert origin[1] == []  # nothing reached the upstream
    got = requests.get(proxy.url + "/token", params={"service": "reg", "scope": "repository:demo/app:pull"}, timeout=10)
    assert got.status_code == 200 and got.json()["expires_in"] == 300
    token = got.json()["token"]
    assert requests.get(proxy.url + BLOB_PATH, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    ok = requests.get(proxy.url + BLOB_PATH, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.content == BLOB
    assert origin[1] == [("GET", BLOB_PATH)]
    assert origin[2] == [None]  # the proxy's token is not forwarded
    assert (auth.issued, auth.refused, auth.challenged) == (1, 0, 3)
    assert auth.scopes == ["repository:demo/app:pull"]
    assert [type(r.action) for r in proxy.requests()] == [Challenged, Challenged, TokenRequest, Challenged, PassThrough]
    proxy.rotate_token()
    assert (
        requests.get(proxy.url + BLOB_PATH, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 401
    )


def test_token_endpoint_requires_the_basic_credentials_when_given(proxy: FaultProxy) -> None:
    auth = proxy.require_token("alice", "s3cret")
    assert requests.get(proxy.url + "/token", timeout=10).status_code == 401
    assert requests.get(proxy.url + "/token", auth=("alice", "wrong"), timeout=10).status_code == 401
    assert requests.get(proxy.url + "/token", auth=("alice", "s3cret"), timeout=10).json()["token"] == auth.token
    assert (auth.issued, auth.refused) == (1, 2)


def test_tokens_past_their_max_age_are_refused_and_every_grant_is_a_new_token(proxy: FaultProxy) -> None:
    proxy.require_token(max_age_s=0.5)
    first = requests.get(proxy.url + "/token", timeout=10).json()["token"]
    second = requests.get(proxy.url + "/token", timeout=10).json()["token"]
    assert first != second
    assert requests.get(proxy.url + BLOB_PATH, headers={"Authorization": f"Bearer {first}"}, timeout=10).ok
    time.sleep(0.6)
    assert (
        requests.get(proxy.url + BLOB_PATH, headers={"Authorization": f"Bearer {first}"}, timeout=10).status_code == 401
    )


def test_layerfill_client_does_the_token_dance_and_recovers_from_a_revoked_token(proxy: FaultProxy, origin) -> None:
    auth = proxy.require_token("alice", "s3cret")
    proxy.add(Status(503), path="^/token$", times=1)  # a token endpoint hiccup is retried like any request
    with RegistryClient(proxy.url, credentials=("alice", "s3cret")) as client:
        with client.open_blob("demo/app", DIGEST) as blob:
            assert b"".join(blob) == BLOB
        assert [(r.path, r.status) for r in proxy.requests()] == [
            (BLOB_PATH, 401), ("/token", 503), ("/token", 200), (BLOB_PATH, 200)
        ]  # fmt: skip
        assert client.blob_exists("demo/app", OTHER_DIGEST) == len(OTHER)  # the cached token goes out up front
        assert auth.challenged == 1 and auth.issued == 1
        proxy.rotate_token()
        with client.open_blob("demo/app", OTHER_DIGEST) as blob:
            assert b"".join(blob) == OTHER
        assert auth.challenged == 2 and auth.issued == 2
    assert origin[2] == [None, None, None]
    with RegistryClient(proxy.url, credentials=("alice", "wrong")) as bad, pytest.raises(Unauthorized, match="refused"):
        bad.blob_exists("demo/app", DIGEST)
    assert auth.refused == 1


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Corrupt(at=-1), "Corrupt.at"),
        (lambda: Corrupt(count=0), "Corrupt.count"),
        (lambda: Truncate(after=-5), "Truncate.after"),
        (lambda: Reset(after=True), "Reset.after"),
        (lambda: Status(700), "Status.code"),
        (lambda: Slow(bytes_per_s=0), "Slow.bytes_per_s"),
        (lambda: Stall(after=1, seconds=0), "Stall.seconds"),
        (lambda: TokenAuth(username="u"), "TokenAuth"),
        (lambda: TokenAuth(max_age_s=0), "TokenAuth.max_age_s"),
    ],
)
def test_bad_settings_name_the_field(make, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        make()


def test_bad_upstream_url_and_times_are_refused() -> None:
    with pytest.raises(ValueError, match="upstream_url"):
        FaultProxy("https://example.com/v2")
    with FaultProxy("http://127.0.0.1:9") as fp, pytest.raises(ValueError, match=r"Rule\.times"):
        fp.add(PassThrough(), times=0)

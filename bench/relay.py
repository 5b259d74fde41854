"""A timing relay for the benchmarks: a pass-through HTTP proxy in front of the upstream registry that records,
for every request, when it arrived and when the upstream's first response body byte came back, and that can cap
each client connection's download rate (an I/O-bound upstream without `tc`), and that can fail a fraction of
requests (`fault_ratio`: 503 with Retry-After 0 or 1, or a TCP reset before any byte; the soak's upstream faults).

    with Relay("http://127.0.0.1:15000", bytes_per_s=1 << 20) as relay:
        ... route upstream_url=relay.url ...
        hit = relay.first(f"/blobs/{digest}")      # Hit(t_request, t_first_byte, ...), wall-clock seconds

tests/support/faultproxy.py is the failure-drill proxy; it records no times, and its `Slow` action paces one
response rather than a connection, so the benchmarks carry this small relay of their own."""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade"]
)  # fmt: skip


@dataclass
class Hit:
    """One request seen. Times are `time.time()` (wall clock, comparable with Kafka record timestamps)."""

    method: str
    path: str
    t_request: float
    t_first_byte: float | None = None  # the upstream's first body byte read by the relay
    t_done: float | None = None
    status: int | None = None
    body_bytes: int = 0


# What an injected fault does: answer 503 with `Retry-After: 0` or `1`, or reset the connection unanswered.
FAULTS = ("503-retry-after-0", "503-retry-after-1", "reset")


class Relay:
    def __init__(self, upstream_url: str, *, bytes_per_s: int | None = None, host: str = "127.0.0.1",
                 fault_ratio: float = 0.0, seed: int = 0, keep_hits: bool = True) -> None:  # fmt: skip
        """`keep_hits=False` keeps counts only (`requests`, `faults`): a long run's memory stays flat."""
        if not 0.0 <= fault_ratio < 1.0:
            raise ValueError(f"fault_ratio must be in [0, 1), got {fault_ratio!r}")
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream_url must be http://host[:port], got {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.bytes_per_s = bytes_per_s
        self.hits: list[Hit] = []
        self.keep_hits = keep_hits
        self.fault_ratio = fault_ratio
        self.requests = 0
        self.faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._server.request_queue_size = 128
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Relay:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="relay", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(10)
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, hit: Hit) -> str | None:
        """Count (and keep) one request; returns the fault to inject into it, or None to pass it through."""
        with self._lock:
            self.requests += 1
            if self.keep_hits:
                self.hits.append(hit)
            if self.fault_ratio and self._rng.random() < self.fault_ratio:
                fault = self._rng.choice(FAULTS)
                self.faults[fault] += 1
                return fault
            return None

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, **{f"fault_{k}": v for k, v in self.faults.items()}}

    def find(self, part: str, method: str = "GET") -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if part in h.path and h.method == method]

    def first(self, part: str, method: str = "GET") -> Hit | None:
        found = self.find(part, method)
        return min(found, key=lambda h: h.t_request) if found else None


def _handler_for(relay: Relay) -> type[BaseHTTPRequestHandler]:
    class Handler(_RelayHandler):
        owner = relay

    return Handler


class _RelayHandler(BaseHTTPRequestHandler):
    owner: Relay
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        hit = Hit(self.command, self.path.partition("?")[0], time.time())
        fault = self.owner.record(hit)
        if fault is not None:
            self._fault(hit, fault)
            return
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            length = self.headers.get("Content-Length")
            body = self.rfile.read(int(length)) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            hit.status = resp.status
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            has_body = self.command != "HEAD" and resp.status not in (204, 304)
            if has_body and resp.getheader("Content-Length") is None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if has_body:
                self._copy(hit, resp)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True
        finally:
            hit.t_done = time.time()
            conn.close()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _fault(self, hit: Hit, fault: str) -> None:
        length = self.headers.get("Content-Length")
        if length:
            self.rfile.read(int(length))
        hit.t_done = time.time()
        if fault == "reset":
            # SO_LINGER 0: close() sends a RST, as a dying upstream or middlebox would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        hit.status = 503
        body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected by the relay"}]}'
        self.send_response_only(503, "Service Unavailable")
        self.send_header("Retry-After", fault.rsplit("-", 1)[1])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _copy(self, hit: Hit, resp: http.client.HTTPResponse) -> None:
        rate = self.owner.bytes_per_s
        start = time.monotonic()
        while chunk := resp.read1(CHUNK):
            if hit.t_first_byte is None:
                hit.t_first_byte = time.time()
            self.wfile.write(chunk)
            hit.body_bytes += len(chunk)
            if rate:
                # Paced per connection: this response never runs ahead of `rate` since its start.
                ahead = hit.body_bytes / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

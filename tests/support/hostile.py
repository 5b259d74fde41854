"""Tools for the hostile-input drills: a socket that counts who connects to it (a host the configuration does not
name must see no connection), pushing hand-made manifests through the registry HTTP API, planting what the
registry refuses to take through its API straight into its storage, a deliberately hostile upstream for what no
real registry will serve, raw records on Kafka, and the drills' result files."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from confluent_kafka import Producer

from layerfill.config.settings import KafkaSettings
from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.oci import mediatypes as mt
from tests.support.stack import DevStack


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ConnectionCounter:
    """A TCP port that accepts and immediately closes every connection, counting them (and the first bytes each
    sent, to tell what asked). Zero connections means nothing was ever sent its way."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        host, port = self._sock.getsockname()[:2]
        self.address = f"{host}:{port}"  # `host:port`, as a registry name; kept after close
        self.connections = 0
        self.first_bytes: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="connection-counter", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                try:
                    self.first_bytes.append(conn.recv(200))
                except OSError:
                    self.first_bytes.append(b"")

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def __enter__(self) -> ConnectionCounter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


# -- the registry HTTP API, for manifests no image tool would write ----------------------------------------------


class RegistryAPI:
    """Blob and manifest pushes over the distribution HTTP API (keep-alive session)."""

    def __init__(self, registry: str) -> None:
        self.base = f"http://{registry}"
        self.session = requests.Session()

    def blob(self, repository: str, data: bytes) -> str:
        resp = self.session.post(f"{self.base}/v2/{repository}/blobs/uploads/", timeout=60)
        resp.raise_for_status()
        location = resp.headers["Location"]
        if location.startswith("/"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        resp = self.session.put(f"{location}{sep}digest={sha256(data)}", data=data, timeout=60,
                                headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        resp.raise_for_status()
        return sha256(data)

    def put_manifest(self, repository: str, ref: str, body: bytes, media_type: str) -> requests.Response:
        """The registry's answer, unchecked: some of these manifests it is expected to refuse."""
        return self.session.put(f"{self.base}/v2/{repository}/manifests/{ref}", data=body, timeout=120,
                                headers={"Content-Type": media_type})  # fmt: skip

    def manifest(self, repository: str, body: bytes, media_type: str, tag: str | None = None) -> str:
        resp = self.put_manifest(repository, tag or sha256(body), body, media_type)
        assert resp.status_code == 201, f"{resp.status_code} {resp.text[:500]}"
        return sha256(body)

    def close(self) -> None:
        self.session.close()


def plant_manifest(devstack: DevStack, repository: str, data: bytes, digest: str | None = None) -> str:
    """Put manifest bytes into the upstream registry's filesystem storage under `digest` (default: their own),
    as the registry would after a push. For what its API refuses: manifests with foreign `urls`, and bytes that do
    not hash to the digest they are filed under (the only way an index can name itself)."""
    digest = digest or sha256(data)
    hexa = digest.split(":", 1)[1]
    root = devstack.ctx.paths.data / "upstream" / "docker" / "registry" / "v2"
    blob_dir = root / "blobs" / "sha256" / hexa[:2] / hexa
    blob_dir.mkdir(parents=True, exist_ok=True)
    (blob_dir / "data").write_bytes(data)
    link_dir = root / "repositories" / repository / "_manifests" / "revisions" / "sha256" / hexa
    link_dir.mkdir(parents=True, exist_ok=True)
    (link_dir / "link").write_text(digest)
    return digest


def oci_config(marker: str) -> bytes:
    return json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
         "config": {"Labels": {"marker": marker}}},
        separators=(",", ":"),
    ).encode()  # fmt: skip


def descriptor(media_type: str, data_or_digest: bytes | str, size: int | None = None, **extra: Any) -> dict[str, Any]:
    if isinstance(data_or_digest, bytes):
        digest, real = sha256(data_or_digest), len(data_or_digest)
    else:
        digest, real = data_or_digest, 0
    return {"mediaType": media_type, "digest": digest, "size": real if size is None else size, **extra}


def image_manifest(config: dict[str, Any], layers: Iterable[dict[str, Any]], **extra: Any) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": list(layers), **extra}
    return json.dumps(doc, separators=(",", ":")).encode()


def image_index(children: Iterable[dict[str, Any]]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": list(children)}
    return json.dumps(doc, separators=(",", ":")).encode()


# -- a hostile upstream ------------------------------------------------------------------------------------------


@dataclass
class Served:
    body: bytes
    content_type: str
    declare_length: bool = True  # False: chunked, the size known only by reading


class HostileUpstream:
    """A registry front that serves exactly the responses it is given, by path, and records every request: for the
    content no real registry will serve (distribution refuses to store or serve a manifest over 4 MiB)."""

    def __init__(self) -> None:
        self.routes: dict[str, Served] = {}
        self.requests: list[tuple[str, str]] = []
        self.bytes_sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append((self.command, self.path))
                path = self.path.split("?", 1)[0]
                if path == "/v2/":
                    return self._send(200, b"{}", "application/json", True)
                served = outer.routes.get(path)
                if served is None:
                    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
                    return self._send(404, body, "application/json", True)
                self._send(200, served.body, served.content_type, served.declare_length)

            do_HEAD = do_GET

            def _send(self, status: int, body: bytes, ctype: str, declare: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if status == 200 and body:
                    self.send_header("Docker-Content-Digest", sha256(body))
                if declare:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if self.command == "HEAD":
                    return
                try:
                    if declare:
                        self.wfile.write(body)
                        outer.bytes_sent += len(body)
                        return
                    for i in range(0, len(body), 64 * 1024):
                        chunk = body[i : i + 64 * 1024]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        outer.bytes_sent += len(chunk)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client stopped reading: what a cap should do

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def serve_manifest(self, repository: str, body: bytes, media_type: str, *, declare_length: bool = True) -> str:
        digest = sha256(body)
        self.routes[f"/v2/{repository}/manifests/{digest}"] = Served(body, media_type, declare_length)
        return digest

    def __enter__(self) -> HostileUpstream:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- Kafka -------------------------------------------------------------------------------------------------------


def produce_raw(kafka: KafkaSettings, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce (key, value) pairs as they are, no encoding and no validation; returns how many were acknowledged."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20, "message.max.bytes": 2_000_000})  # fmt: skip
    failed: list[str] = []
    acked = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal acked
        if err is not None:
            failed.append(str(err))
        else:
            acked += 1

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(120)
    assert remaining == 0 and not failed, f"{remaining} undelivered, errors: {failed[:3]}"
    return acked


def dead_letters(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raw DLQ records with their parsed dead-letter headers under `dlq`."""
    return [{**r, "dlq": parse_dlq_headers(list(r["headers"].items()))} for r in records]


# -- results -----------------------------------------------------------------------------------------------------


def write_results(devstack: DevStack, name: str, data: dict[str, Any]) -> Path:
    """The drill's numbers, for docs/reliability.md: .devstack/faults-results/<name>-<time>.json."""
    directory = devstack.ctx.paths.state / "faults-results"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path

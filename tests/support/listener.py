"""A throwaway HTTP endpoint that records what a registry POSTs to it (notifications)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class NotificationListener:
    def __init__(self, host: str, port: int) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer._lock:
                    outer.received.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(body or b"{}")}
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> NotificationListener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [ev for req in self.received for ev in req["body"].get("events", [])]

    def wait_for(self, predicate, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [ev for ev in self.events() if predicate(ev)]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no matching notification within {timeout}s; got {len(self.events())} events")

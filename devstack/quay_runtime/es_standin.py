"""The Elasticsearch calls Quay's `elasticsearch` logs model makes at start-up, answered so that it carries on
with its Kafka producer: the index template GET is 404 (none yet) and its PUT 200. Nothing is stored; with the
Kafka producer no log entry is ever written to Elasticsearch. Standard library only."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drain(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("", "/"):
            self._answer(200, {"version": {"number": "7.10.2"}, "tagline": "You Know, for Search"})
        else:
            self._answer(404, {"error": "not found", "status": 404})

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        self._drain()
        self._answer(200, {"acknowledged": True})

    do_POST = do_PUT

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write("es-standin: " + fmt % args + "\n")


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()

"""A small HTTP server for a worker process: /healthz, /readyz and /metrics on one port."""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from layerfill.observability import build_info  # noqa: F401  (registers layerfill_build_info)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True


def serve_health(
    host: str, port: int, live: Callable[[], bool], ready: Callable[[], bool]
) -> tuple[WSGIServer, threading.Thread]:
    metrics_app = make_wsgi_app()

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/readyz"):
            ok = live() if path == "/healthz" else ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="health-http", daemon=True)
    thread.start()
    return server, thread

"""The one place sinks are built. The sink a route asks for, built once and shared: one DistributionSink per S3
configuration and one RegistrySink per proxy login, so all fetcher workers share their connection pools; and the
cache's storage itself for the commands that read it (verify, backfill, the status page, the demo). Nothing
outside layerfill/sinks/ names a sink's type: callers go through `Sink`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

from layerfill.config.routes import Route
from layerfill.config.settings import S3Settings
from layerfill.sinks.base import Sink
from layerfill.sinks.budget import ByteBudget
from layerfill.sinks.distribution import DEFAULT_BUFFER_BYTES, DEFAULT_PART_SIZE, DistributionSink
from layerfill.sinks.registry import RegistrySink
from layerfill.sinks.registry_auth import RegistryAuth


def _s3_key(s3: S3Settings) -> Hashable:
    return (s3.endpoint, s3.access_key, s3.secret_key.get_secret_value(), s3.region, s3.bucket, s3.root_directory)


class SinkFactory:
    def __init__(
        self,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        max_connections: int = 16,
        presign_endpoint: str | None = None,
        presign_expiry_s: int = 3600,
        registry_auth: RegistryAuth | None = None,
    ) -> None:
        self.part_size = part_size
        # One budget for every distribution sink made here: the process's part buffers, whatever the routes.
        self.budget = ByteBudget(buffer_bytes)
        self.max_connections = max_connections
        # For `Sink.blob_location` (the scanner's layer URLs): the S3 endpoint Clair reaches, how long a URL lives,
        # and the token cache for proxies that challenge with Bearer.
        self.presign_endpoint = presign_endpoint
        self.presign_expiry_s = presign_expiry_s
        self.registry_auth = registry_auth
        self._sinks: dict[Hashable, Sink] = {}
        self._lock = threading.Lock()

    def make(self, route: Route, s3: S3Settings) -> Sink:
        if route.sink == "distribution":
            key: Hashable = ("distribution", _s3_key(s3))
            return self._get(
                key,
                lambda: DistributionSink(
                    s3,
                    self.part_size,
                    max_connections=self.max_connections,
                    presign_endpoint=self.presign_endpoint,
                    presign_expiry_s=self.presign_expiry_s,
                    budget=self.budget,
                ),
            )
        if route.sink == "registry":
            if not route.proxy_url:
                raise ValueError(f"route for {route.registry!r} uses sink 'registry' but sets no proxy_url")
            password = route.proxy_password.get_secret_value() if route.proxy_password else None
            key = ("registry", route.proxy_url, route.proxy_username, password, route.max_concurrency)
            return self._get(
                key,
                lambda: RegistrySink(
                    route.proxy_url or "",
                    route.proxy_username,
                    password,
                    max_concurrency=route.max_concurrency,
                    auth=self.registry_auth,
                ),
            )
        raise ValueError(f"route for {route.registry!r} names unknown sink {route.sink!r}")

    def _get(self, key: Hashable, build: Callable[[], Sink]) -> Sink:
        with self._lock:
            sink = self._sinks.get(key)
            if sink is None:
                sink = self._sinks[key] = build()
            return sink

    def close(self) -> None:
        with self._lock:
            sinks, self._sinks = list(self._sinks.values()), {}
        for sink in sinks:
            sink.close()


def cache_storage(s3: S3Settings) -> DistributionSink:
    """The cache's own storage (distribution's layout in S3), for the commands that list and read it."""
    return DistributionSink(s3)

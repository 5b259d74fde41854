"""Platforms of image manifests, read from their config blobs in the cache's storage (distribution layout).

The state DB records which config blob belongs to which image manifest, not its platform; config blobs are
content-addressed and so never change: each is read once and remembered."""

from __future__ import annotations

import logging
import threading

from cachetools import LRUCache

from layerfill.config.settings import S3Settings
from layerfill.sinks.base import SinkError

from .views import platform_of_config

log = logging.getLogger(__name__)
_MAX_CONFIG_BYTES = 1024 * 1024


class ConfigPlatforms:
    def __init__(self, s3: S3Settings, maxsize: int = 4096) -> None:
        self._s3 = s3
        self._sink = None
        self._known: LRUCache[str, str | None] = LRUCache(maxsize)
        self._lock = threading.Lock()

    def __call__(self, config_digest: str) -> str | None:
        with self._lock:
            if config_digest in self._known:
                return self._known[config_digest]
        try:
            data = self._storage().read_blob_bytes(config_digest, max_bytes=_MAX_CONFIG_BYTES)
        except (SinkError, LookupError, ValueError) as exc:  # not there (yet), or storage down: unknown for now
            log.debug("no platform for %s: %s", config_digest, exc)
            return None
        platform = platform_of_config(data)
        with self._lock:
            self._known[config_digest] = platform
        return platform

    def _storage(self):
        if self._sink is None:
            from layerfill.sinks.factory import cache_storage

            self._sink = cache_storage(self._s3)
        return self._sink

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()

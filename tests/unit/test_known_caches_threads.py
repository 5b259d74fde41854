"""The caches of images known complete (fetcher) and manifests known scanned (scanner) are read by triage in the
loop's thread and written by after-commit steps and the image pool's workers. An LRU alone is not thread-safe
(with cachetools' LRUCache, used before, concurrent inserts that evict raced in its popitem (KeyError) and
corrupted its size). Hammered here from the services' own pools, past the caches' bound (100,000 keys) so that
inserts evict."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layerfill.config.settings import KafkaSettings, Settings
from layerfill.consumers.fetcher.service import FetcherService
from layerfill.consumers.scanner.service import ScannerService
from layerfill.kafka.keys import image_fingerprint, image_key

pytestmark = pytest.mark.unit

THREADS, INSERTS, MAXSIZE = 16, 12_500, 100_000


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch every microsecond rather than every 5 ms, so that races show up within a unit test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"log_level": "0"}),
        fetcher={"max_inflight_images": THREADS, "health_port": None},
        scanner={"max_inflight_images": THREADS, "health_port": None},
        state={"database_url": f"sqlite:///{tmp_path / 'state.db'}"},
    )


def _fetcher_key(repository: str, digest: str) -> bytes:
    return image_fingerprint(image_key("cache.example:5000", repository, digest))


def _scanner_key(repository: str, digest: str) -> tuple[str, str, str]:
    return ("cache.example:5000", repository, digest)


def _hammer(pool: Any, cache: Any, thread: int, make_key: Callable[[str, str], Any]) -> int:
    """One pool worker: insert keys (as the after-commit steps do), look them up (as triage does)."""
    found = 0
    for i in range(INSERTS):
        key = make_key(f"repo/{thread}", f"sha256:{i:064x}")
        cache[key] = True
        found += key in cache
    return found


def _hammer_from(pool: Any, cache: Any, make_key: Callable[[str, str], Any]) -> None:
    futures = [pool.submit(_hammer, pool, cache, t, make_key) for t in range(THREADS)]
    for f in futures:
        f.result()  # re-raises what a worker met (KeyError from a racing eviction)
    assert len(cache) <= MAXSIZE


@pytest.mark.parametrize(
    ("service", "pool", "cache", "make_key"),
    [
        (FetcherService, "image_pool", "known_complete", _fetcher_key),
        (ScannerService, "pool", "known_done", _scanner_key),
    ],
    ids=["fetcher-completed-images", "scanner-scanned-manifests"],
)
def test_the_known_cache_survives_the_services_pool(
    tmp_path: Path, fast_switching: None, service: Any, pool: str, cache: str, make_key: Callable[[str, str], Any]
) -> None:
    svc = service(_settings(tmp_path))
    try:
        _hammer_from(getattr(svc, pool), getattr(svc, cache), make_key)
    finally:
        svc.pool.shutdown()
        svc.close()
        svc.state.close()

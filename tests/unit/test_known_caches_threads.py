"""The caches of images known complete (fetcher) and manifests known scanned (scanner) are read by triage in the
loop's thread and written by after-commit steps and the image pool's workers. An LRU alone is not thread-safe
(with cachetools' LRUCache, used before, concurrent inserts that evict raced in its popitem (KeyError) and
corrupted its size). Hammered here from the services' own pools, past the caches' bound (100,000 keys) so that
inserts evict."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerfill.config.settings import KafkaSettings, Settings
from layerfill.consumers.fetcher.service import FetcherService
from layerfill.consumers.scanner.service import ScannerService

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


def _hammer(pool: Any, cache: Any, thread: int) -> int:
    """One pool worker: insert keys (as the after-commit steps do), look them up (as triage does)."""
    found = 0
    for i in range(INSERTS):
        key = ("cache.example:5000", f"repo/{thread}", f"sha256:{i:064x}")
        cache[key] = True
        found += key in cache
    return found


def _hammer_from(pool: Any, cache: Any) -> None:
    futures = [pool.submit(_hammer, pool, cache, t) for t in range(THREADS)]
    for f in futures:
        f.result()  # re-raises what a worker met (KeyError from a racing eviction)
    assert len(cache) <= MAXSIZE


@pytest.mark.parametrize(
    ("service", "pool", "cache"),
    [(FetcherService, "image_pool", "known_complete"), (ScannerService, "pool", "known_done")],
    ids=["fetcher-completed-images", "scanner-scanned-manifests"],
)
def test_the_known_cache_survives_the_services_pool(
    tmp_path: Path, fast_switching: None, service: Any, pool: str, cache: str
) -> None:
    svc = service(_settings(tmp_path))
    try:
        _hammer_from(getattr(svc, pool), getattr(svc, cache))
    finally:
        svc.pool.shutdown()
        svc.close()
        svc.state.close()

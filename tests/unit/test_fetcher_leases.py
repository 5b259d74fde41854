"""BlobLeases.exclusive on a real (SQLite) state DB: one fetch per blob among concurrent fills, waiters link."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from layerfill.consumers.fetcher.leases import BlobLeases
from layerfill.state import StateStore

pytestmark = pytest.mark.unit

D = "sha256:" + "1" * 64


def test_one_fetch_among_concurrent_holders_and_the_rest_link(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    leases = [BlobLeases(store, f"fetcher-{i}") for i in range(4)]
    stored = threading.Event()
    calls: list[str] = []
    lock = threading.Lock()

    def fetch() -> str:
        with lock:
            calls.append("fetch")
        time.sleep(0.3)
        stored.set()
        return "fetched"

    def link() -> str:
        with lock:
            calls.append("link")
        return "linked"

    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda le=le: results.append(le.exclusive(D, 30, 0.02, stored=stored.is_set, fetch=fetch, link=link))
        )
        for le in leases
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["fetched", "linked", "linked", "linked"]
    assert calls.count("fetch") == 1
    assert store.blob_lease_holder(D) is None  # released
    for le in leases:
        le.close()
    store.close()


def test_a_dead_holder_blocks_only_until_its_lease_expires(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    assert store.acquire_blob_lease(D, "crashed", 2)  # never renewed, never released
    start = time.monotonic()
    got = BlobLeases(store, "survivor").exclusive(D, 2, 0.05, stored=lambda: False, fetch=lambda: "fetched",
                                                  link=lambda: "linked")  # fmt: skip
    assert got == "fetched"
    assert 1.5 < time.monotonic() - start < 5
    store.close()


def test_without_a_state_db_it_fetches_anyway(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 's.db'}")
    store.close()
    (tmp_path / "s.db").unlink()
    (tmp_path / "s.db").mkdir()  # the file cannot be opened any more
    got = BlobLeases(store, "x").exclusive(D, 30, 0.05, stored=lambda: False, fetch=lambda: "fetched",
                                           link=lambda: "linked")  # fmt: skip
    assert got == "fetched"

"""A bounded set of keys a stage knows are done (images complete, manifests scanned), safe from any thread; a
key may carry a value (the fetcher keeps, per image, until when its repeats need no decoding).

Triage reads it in the loop's thread and after-commit steps or pool workers add to it: cachetools' LRUCache,
which keeps it bounded, is not thread-safe (concurrent inserts that evict corrupt its order and raise
KeyError), so every access holds one lock. Each access is a dict operation: the lock is never held long."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any

from cachetools import LRUCache


class KnownSet:
    def __init__(self, maxsize: int = 100_000) -> None:
        self._keys: LRUCache[Hashable, Any] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._keys

    def get(self, key: Hashable) -> Any:
        """The value stored with `key` (which counts as a use: the least recently used go first), or None."""
        with self._lock:
            return self._keys.get(key)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        # Item assignment as well as add(): the stages' caches were LRUCache[key, True] and are used so.
        with self._lock:
            self._keys[key] = value

    def add(self, key: Hashable) -> None:
        self[key] = True

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    @property
    def maxsize(self) -> int:
        return int(self._keys.maxsize)

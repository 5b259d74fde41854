"""Bounded maps of keys a stage knows are done (images complete, manifests scanned); a key may carry a value (the
fetcher keeps, per image, until when its repeats need no decoding).

`Lru` is a least-recently-used map on one OrderedDict. cachetools' LRUCache keeps a dict and an OrderedDict of the
same keys: per entry it costs a third more (bench.cache_memory), and these maps hold up to `fetcher.known_images`
entries each, which is what a long-running fetcher's memory grows with (docs/reliability.md).

`KnownSet` is such a map safe from any thread: triage reads it in the loop's thread and after-commit steps or pool
workers add to it, and a read marks the entry used. Every access holds one lock and is one map operation, so the lock
is never held long. Keyed by image fingerprints (the fetcher), it takes a `FingerprintTable`, whose memory is all
taken at start-up; any other keys (the scanner's) an `Lru`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from .fingerprint_table import FingerprintTable

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `maxsize` entries; a read or a write makes its key the most recently used, and a write beyond
    `maxsize` drops the least recently used. Not thread-safe: callers hold their own lock."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, default: V | None = None) -> V | None:
        try:
            self._data.move_to_end(key)
        except KeyError:
            return default
        return self._data[key]

    def __setitem__(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.maxsize:
            data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._data  # a membership test is not a use

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._data.pop(key, default)

    def __len__(self) -> int:
        return len(self._data)


class KnownSet:
    def __init__(self, maxsize: int = 100_000, *, fingerprints: bool = False) -> None:
        self._keys: Lru[Hashable, Any] | FingerprintTable = FingerprintTable(maxsize) if fingerprints else Lru(maxsize)
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
        return self._keys.maxsize

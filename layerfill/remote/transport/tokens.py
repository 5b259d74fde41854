"""A thread-safe cache of registry bearer tokens with per-key single-flight fetching.

Keyed by (realm, service, scope, identity): identity is the username the token was obtained with ("" for
anonymous), so two routes with different accounts sharing one cache never swap tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TLRUCache

from layerfill.remote.transport.redact import MASK, remember_secret

DEFAULT_EXPIRES_IN = 60.0
# Refresh a little before the server's deadline so a token never expires in flight.
_MAX_EARLY_REFRESH = 10.0
_FETCH_LOCK_STRIPES = 64


@dataclass(frozen=True, slots=True)
class TokenKey:
    realm: str
    service: str
    scope: str
    identity: str = ""


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_in: float

    def __post_init__(self) -> None:
        remember_secret(self.value)

    def __repr__(self) -> str:
        return f"Token(value={MASK!r}, expires_in={self.expires_in!r})"


@dataclass(frozen=True, slots=True)
class _Entry:
    token: str
    good_until: float

    def __repr__(self) -> str:
        return f"_Entry({MASK!r}, good_until={self.good_until!r})"


class TokenCache:
    def __init__(self, maxsize: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cache: TLRUCache[TokenKey, _Entry] = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, entry, _now: entry.good_until, timer=clock
        )
        self._lock = threading.Lock()
        # Striped locks keep single-flight bounded in memory however many repositories are seen.
        self._fetch_locks = tuple(threading.Lock() for _ in range(_FETCH_LOCK_STRIPES))

    def get(self, key: TokenKey) -> str | None:
        with self._lock:
            entry = self._cache.get(key)
            return entry.token if entry is not None else None

    def put(self, key: TokenKey, token: Token) -> None:
        lifetime = token.expires_in if token.expires_in > 0 else DEFAULT_EXPIRES_IN
        early = min(_MAX_EARLY_REFRESH, lifetime / 4)
        with self._lock:
            self._cache[key] = _Entry(token.value, self._clock() + lifetime - early)

    def invalidate(self, key: TokenKey, token: str | None = None) -> None:
        """Drop the cached token (only if it is still `token`, when given: another thread may have
        already replaced it with a fresh one)."""
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and (token is None or entry.token == token):
                del self._cache[key]

    def get_or_fetch(self, key: TokenKey, fetch: Callable[[], Token]) -> str:
        """The cached token, or one fetched by exactly one thread while the others for `key` wait."""
        cached = self.get(key)
        if cached is not None:
            return cached
        with self._fetch_locks[hash(key) % _FETCH_LOCK_STRIPES]:
            cached = self.get(key)  # another thread may have fetched it while we waited
            if cached is not None:
                return cached
            token = fetch()
            self.put(key, token)
            return token.value

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def __repr__(self) -> str:
        return f"TokenCache(entries={len(self)})"

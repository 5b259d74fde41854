import threading
import time

import pytest

from layerfill.remote.transport.tokens import Token, TokenCache, TokenKey

pytestmark = pytest.mark.unit

KEY = TokenKey("https://auth/token", "svc", "repository:a:pull")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_lives_until_shortly_before_expiry() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    cache.put(KEY, Token("t1", 300))
    clock.now += 289  # refreshed 10 s early
    assert cache.get(KEY) == "t1"
    clock.now += 2
    assert cache.get(KEY) is None


def test_missing_or_bad_lifetime_defaults_to_60_seconds() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    cache.put(KEY, Token("t1", 0))
    clock.now += 49
    assert cache.get(KEY) == "t1"
    clock.now += 2
    assert cache.get(KEY) is None


def test_short_lifetimes_still_get_used() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    cache.put(KEY, Token("t1", 8))
    clock.now += 5
    assert cache.get(KEY) == "t1"
    clock.now += 1.5
    assert cache.get(KEY) is None


def test_keys_differ_by_scope_and_identity() -> None:
    cache = TokenCache()
    cache.put(KEY, Token("anon", 60))
    assert cache.get(TokenKey(KEY.realm, KEY.service, KEY.scope, "alice")) is None
    assert cache.get(TokenKey(KEY.realm, KEY.service, "repository:b:pull")) is None
    assert cache.get(KEY) == "anon"


def test_invalidate_only_removes_the_token_it_names() -> None:
    cache = TokenCache()
    cache.put(KEY, Token("fresh", 60))
    cache.invalidate(KEY, "stale")
    assert cache.get(KEY) == "fresh"
    cache.invalidate(KEY, "fresh")
    assert cache.get(KEY) is None


def test_concurrent_callers_share_one_fetch() -> None:
    cache = TokenCache()
    calls = []
    gate = threading.Event()

    def fetch() -> Token:
        calls.append(1)
        gate.wait(5)
        return Token("shared", 60)

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_fetch(KEY, fetch))) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results == ["shared"] * 8
    assert len(calls) == 1


def test_failed_fetch_is_not_cached() -> None:
    cache = TokenCache()

    def failing() -> Token:
        raise RuntimeError("realm down")

    with pytest.raises(RuntimeError):
        cache.get_or_fetch(KEY, failing)
    assert cache.get_or_fetch(KEY, lambda: Token("ok", 60)) == "ok"


def test_repr_hides_token() -> None:
    assert "sekrit-token" not in repr(Token("sekrit-token", 60))

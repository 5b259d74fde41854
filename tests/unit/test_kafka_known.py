"""The bounded LRU behind the fetcher's per-image maps, and the fingerprint those maps are keyed by."""

from __future__ import annotations

import pytest

from layerfill.kafka.keys import image_fingerprint, image_from_headers, image_key
from layerfill.kafka.known import KnownSet, Lru

pytestmark = pytest.mark.unit


def test_a_full_lru_drops_the_least_recently_used() -> None:
    lru: Lru[str, int] = Lru(2)
    lru["a"], lru["b"] = 1, 2
    assert lru.get("a") == 1  # a read is a use: "b" is now the oldest
    lru["c"] = 3
    assert "b" not in lru and lru.get("a") == 1 and lru.get("c") == 3 and len(lru) == 2


def test_overwriting_a_key_makes_it_the_most_recent_and_keeps_the_size() -> None:
    lru: Lru[str, int] = Lru(2)
    lru["a"], lru["b"] = 1, 2
    lru["a"] = 10
    lru["c"] = 3
    assert "b" not in lru and lru.get("a") == 10 and len(lru) == 2


def test_a_membership_test_is_not_a_use() -> None:
    lru: Lru[str, int] = Lru(2)
    lru["a"], lru["b"] = 1, 2
    assert "a" in lru
    lru["c"] = 3
    assert "a" not in lru and "b" in lru


def test_get_and_pop_of_a_missing_key_give_the_default() -> None:
    lru: Lru[str, float] = Lru(1)
    assert lru.get("x") is None and lru.get("x", 0.5) == 0.5 and lru.pop("x") is None
    lru["x"] = 1.0
    assert lru.pop("x") == 1.0 and len(lru) == 0


def test_an_lru_must_hold_something() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Lru(0)


def test_a_known_set_is_bounded_and_keeps_values() -> None:
    known = KnownSet(maxsize=3)
    for i in range(5):
        known[i] = float(i)
    known.add(9)
    assert len(known) == 3 and known.maxsize == 3
    assert 0 not in known and known.get(4) == 4.0 and known.get(9) is True and known.get(1) is None


def test_the_fingerprint_is_16_bytes_and_tells_images_apart() -> None:
    a = image_key("cache.example:5000", "library/alpine", "sha256:" + "a" * 64)
    b = image_key("cache.example:5000", "library/alpine", "sha256:" + "b" * 64)
    other_repo = image_key("cache.example:5000", "library/alpinf", "sha256:" + "a" * 64)
    fps = {image_fingerprint(k) for k in (a, b, other_repo)}
    assert len(fps) == 3 and all(len(fp) == 16 for fp in fps)
    assert image_fingerprint(a) == image_fingerprint(bytes(a))  # stable: a pure function of the key


def test_the_headers_image_and_the_decoded_events_image_have_one_fingerprint() -> None:
    # pretriage fingerprints the key+header bytes, triage the decoded fields: they must meet in one map entry.
    digest = "sha256:" + "c" * 64
    found = image_from_headers(b"cache.example:5000/library/alpine",
                               [("layerfill.digest", digest.encode()), ("layerfill.source", b"pull")])  # fmt: skip
    assert found is not None
    assert image_fingerprint(found[0]) == image_fingerprint(image_key("cache.example:5000", "library/alpine", digest))

"""bench/cache_memory.py measures the fetcher's per-image structures: what each takes when made, what filling adds."""

from __future__ import annotations

import pytest

from bench.cache_memory import measure

pytestmark = pytest.mark.unit


def test_each_map_is_taken_when_made_and_filling_it_adds_nothing() -> None:
    out = measure(2_000)
    parts = [out["known_complete"], out["referrer_claims"]]
    assert all(p["made_per_image_of_capacity"] >= 50 for p in parts)  # two 25-byte slots per image of capacity
    assert all(abs(p["filling_per_image"]) < 1 for p in parts)  # nothing allocated per image held
    made = out["total"]["made_per_image_of_capacity"]
    assert made == pytest.approx(sum(p["made_per_image_of_capacity"] for p in parts))

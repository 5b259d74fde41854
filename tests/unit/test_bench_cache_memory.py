"""bench/cache_memory.py measures the fetcher's per-image structures: each holds something per image."""

from __future__ import annotations

import pytest

from bench.cache_memory import measure

pytestmark = pytest.mark.unit


def test_each_per_image_structure_costs_bytes_and_the_total_adds_them_up() -> None:
    out = measure(2_000)
    parts = [out["known_complete"], out["referrer_claims"]]
    assert all(p > 50 for p in parts)  # at least a key and a table slot per image
    assert out["total"] == pytest.approx(sum(parts))

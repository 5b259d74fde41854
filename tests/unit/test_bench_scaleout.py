"""bench/scaleout.py's pure parts: the steady rate between completion quantiles, and balanced repositories."""

from __future__ import annotations

import zlib

import pytest

from bench.scaleout import balanced_repositories, steady_rate
from layerfill.kafka.keys import repository_key

pytestmark = pytest.mark.unit


def test_the_steady_rate_leaves_out_the_ramp_and_the_tail() -> None:
    # 100 completions: a slow ramp (10 in 10 s), 80 at 10/s, a slow tail (10 in 10 s).
    ramp = [float(i) for i in range(10)]
    steady = [10 + i / 10 for i in range(80)]
    tail = [18 + i for i in range(10)]
    assert steady_rate(ramp + steady + tail) == pytest.approx(10.0, rel=0.02)
    assert steady_rate(list(reversed(ramp + steady + tail))) == pytest.approx(10.0, rel=0.02)  # order-free


def test_too_few_completions_have_no_steady_rate() -> None:
    with pytest.raises(ValueError, match="too few"):
        steady_rate([1.0, 1.0, 1.0])


def test_balanced_repositories_fall_evenly_on_the_partitions() -> None:
    names = balanced_repositories("cache.test:5000", "p", 32, 8)
    counts = [0] * 8
    for n in names:
        counts[zlib.crc32(repository_key("cache.test:5000", n)) % 8] += 1
    assert len(set(names)) == 32 and counts == [4] * 8

"""The fixed-memory table behind the fetcher's per-image maps: a dict's answers, bounded, CLOCK eviction."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest

from layerfill.kafka.fingerprint_table import FingerprintTable

pytestmark = pytest.mark.unit


def fp(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).digest()


def colliding(i: int, home: int) -> bytes:
    """A fingerprint whose slot in a table of up to 8 slots is `home`: forces long probe runs and wrap-around."""
    return bytes([home]) + fp(i)[1:]


def test_it_answers_as_a_dict_does_through_collisions_wraparound_and_removals() -> None:
    rng = random.Random(7)
    table, model = FingerprintTable(4), {}  # 8 slots, every key homed on slot 5, 6 or 7: runs wrap to 0
    keys = [colliding(i, 5 + i % 3) for i in range(6)]
    for step in range(5_000):
        k = rng.choice(keys)
        op = rng.random()
        if op < 0.4 and (k in model or len(model) < 4):
            table[k] = model[k] = float(step)
        elif op < 0.7:
            assert table.pop(k) == model.pop(k, None)
        else:
            assert table.get(k) == model.get(k)
        assert len(table) == len(model)
        assert all((key in table) == (key in model) for key in keys), f"diverged at step {step}"


def test_it_never_holds_more_than_maxsize() -> None:
    table = FingerprintTable(100)
    for i in range(1_000):
        table[fp(i)] = float(i)
    assert len(table) == 100
    assert sum(fp(i) in table for i in range(1_000)) == 100
    assert fp(999) in table and table.get(fp(999)) == 999.0  # the newest is never the one evicted


def test_entries_read_since_the_hand_passed_outlive_those_not_read() -> None:
    table = FingerprintTable(64)
    for i in range(64):
        table[fp(i)] = 0.0
    table[fp(1000)] = 0.0  # the first eviction: the hand clears every mark and evicts one
    read = [i for i in range(64) if fp(i) in table][:32]
    for i in read:
        assert table.get(fp(i)) == 0.0
    for i in range(1001, 1021):  # 20 more evictions: fewer than the 31 entries not read
        table[fp(i)] = 0.0
    assert all(fp(i) in table for i in read)
    assert len(table) == 64


def test_a_membership_test_is_not_a_use() -> None:
    table = FingerprintTable(2)
    table[fp(1)], table[fp(2)] = 1.0, 2.0
    table[fp(3)] = 3.0  # clears both marks, evicts one of 1 and 2
    kept = fp(1) if fp(1) in table else fp(2)
    assert kept in table  # not a use: still unmarked
    table[fp(4)] = 4.0
    assert kept not in table and fp(3) in table and fp(4) in table


def test_overwriting_keeps_the_size_and_takes_the_new_value() -> None:
    table = FingerprintTable(3)
    table[fp(1)] = 1.0
    table[fp(1)] = float("inf")
    assert len(table) == 1 and table.get(fp(1)) == float("inf")


def test_missing_keys_give_the_default() -> None:
    table = FingerprintTable(1)
    assert table.get(fp(1)) is None and table.get(fp(1), 0.5) == 0.5 and table.pop(fp(1)) is None
    assert "not bytes" not in table


def test_bad_sizes_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        FingerprintTable(0)
    with pytest.raises(ValueError, match="16 bytes, got 3"):
        FingerprintTable(1)[b"abc"] = 1.0


_RSS_PROBE = """
import hashlib, json, os
from layerfill.kafka.fingerprint_table import FingerprintTable

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

n = 200_000
before = rss()
table = FingerprintTable(n)
made = rss()
keys = [hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).digest() for i in range(n)]
baseline = rss()
for k in keys:
    table[k] = 1.0
print(json.dumps({"nbytes": table.nbytes, "made": made - before, "filled": rss() - baseline, "len": len(table)}))
"""


def test_its_memory_is_resident_when_made_and_does_not_grow_as_it_fills() -> None:
    # A fresh process: in this one, memory freed by earlier tests is already resident and would be reused.
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE], check=True, capture_output=True, text=True)
    got = json.loads(out.stdout)
    assert got["len"] == 200_000 and got["nbytes"] > 10 * 2**20
    assert got["made"] >= got["nbytes"] * 0.9  # written through at construction, not mapped lazily
    assert got["filled"] < 2**20  # under 1 MiB for 200,000 entries (as a dict they took ~30 MiB)

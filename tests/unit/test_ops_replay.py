"""Pure parts of `layerfill replay` and `backfill`: the offset plan, time parsing, pacing, registry choice."""

from __future__ import annotations

import pytest

from layerfill.cli.replay import parse_time
from layerfill.config.settings import Settings
from layerfill.ops.context import event_registry
from layerfill.ops.offsets import PartitionMove, plan_moves
from layerfill.ops.ratelimit import Pacer

pytestmark = pytest.mark.unit

MARKS = {0: (0, 10), 1: (5, 8), 2: (0, 0)}


def test_plan_by_time_uses_found_offsets_and_end_when_none() -> None:
    moves = plan_moves([2, 0, 1], {0: 10, 1: 8, 2: None}, MARKS, "timestamp", by_time={0: 4, 1: -1, 2: -1})
    assert moves == [PartitionMove(0, 10, 4, 0, 10), PartitionMove(1, 8, 8, 5, 8), PartitionMove(2, None, 0, 0, 0)]
    assert [m.delta for m in moves] == [6, 0, None]


def test_plan_clamps_into_watermarks() -> None:
    moves = plan_moves([0, 1], {0: 3, 1: 6}, MARKS, "offset", offset=7)
    assert [(m.partition, m.target) for m in moves] == [(0, 7), (1, 7)]
    far = plan_moves([0, 1], {}, MARKS, "offset", offset=100)
    assert [m.target for m in far] == [10, 8]
    before = plan_moves([1], {1: 8}, MARKS, "offset", offset=0)
    assert before[0].target == 5  # retention removed 0..4
    assert [m.target for m in plan_moves([0, 1], {}, MARKS, "earliest")] == [0, 5]
    assert [m.target for m in plan_moves([0, 1], {}, MARKS, "latest")] == [10, 8]
    with pytest.raises(ValueError, match="offset"):
        plan_moves([0], {}, MARKS, "offset")


def test_parse_time() -> None:
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000_000  # no zone: UTC
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    with pytest.raises(ValueError, match="--to-time"):
        parse_time("yesterday")


def test_pacer_spaces_calls() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        pacer.wait()
    assert slept == [0.25, 0.25]
    now[0] += 10  # idle time earns no burst beyond one call
    pacer.wait()
    pacer.wait()
    assert slept == [0.25, 0.25, 0.25]
    with pytest.raises(ValueError, match="rate"):
        Pacer(0)


def test_event_registry_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERFILL_ENV_FILE", "none")
    monkeypatch.delenv("LAYERFILL_CONFIG", raising=False)
    route = {"registry": "proxy.example:5000", "upstream_url": "http://up"}
    base = Settings(routes=[route])
    assert event_registry(base, None) == "proxy.example:5000"
    assert event_registry(base, "other.example") == "other.example"
    named = Settings(routes=[route], bridge={"registry_name": "named.example"})
    assert event_registry(named, None) == "named.example"
    two = Settings(routes=[route, {**route, "registry": "b.example"}])
    with pytest.raises(ValueError, match="--registry"):
        event_registry(two, None)
    with pytest.raises(ValueError):
        event_registry(base, "not a host!")

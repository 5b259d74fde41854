"""The logs-API source's choice of new entries: each entry once, across polls and across a restart from the
serialized checkpoint; late entries within the lookback are found; nothing before the first start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from layerfill.producers.quay.checkpoint import Checkpoint, select_new

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 2, 17, 0, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_each_entry_once_across_polls_and_restarts() -> None:
    ckpt = Checkpoint.start(T0)
    first = [("a", at(1)), ("b", at(2))]
    new, ckpt = select_new(first, ckpt, 60)
    assert new == [0, 1]
    again = [*first, ("c", at(3))]
    new, ckpt = select_new(again, Checkpoint.loads(ckpt.dumps()), 60)
    assert new == [2]
    new, _ = select_new(again, ckpt, 60)
    assert new == []


def test_nothing_before_the_first_start() -> None:
    new, ckpt = select_new([("old", at(-5)), ("new", at(0))], Checkpoint.start(T0), 60)
    assert new == [1]
    assert ckpt.floor == T0


def test_a_late_entry_within_the_lookback_is_found_and_older_ones_are_forgotten() -> None:
    _, ckpt = select_new([("a", at(100))], Checkpoint.start(T0), 30)
    new, ckpt = select_new([("late", at(80)), ("a", at(100))], ckpt, 30)
    assert new == [0]
    new, ckpt = select_new([("too-late", at(60)), ("late", at(80)), ("a", at(100)), ("b", at(200))], ckpt, 30)
    assert new == [3]
    assert set(ckpt.seen) == {"b"}

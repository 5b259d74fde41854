"""ByteBudget: never more than the capacity outstanding, oversized reservations proceed alone, FIFO, release on
error."""

from __future__ import annotations

import threading
import time

import pytest

from layerfill.sinks.budget import ByteBudget

pytestmark = pytest.mark.unit

WAIT = 5.0


def _started(target, *args) -> threading.Thread:  # type: ignore[no-untyped-def]
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def _blocked(t: threading.Thread) -> bool:
    t.join(0.1)
    return t.is_alive()


@pytest.mark.parametrize("capacity", [0, -1, 1.5, None])
def test_capacity_must_be_positive_integer(capacity: object) -> None:
    with pytest.raises(ValueError):
        ByteBudget(capacity)  # type: ignore[arg-type]


def test_concurrent_holders_never_exceed_capacity() -> None:
    budget = ByteBudget(40)
    lock = threading.Lock()
    outstanding, worst = 0, 0

    def transfer(part: int) -> None:
        nonlocal outstanding, worst
        for _ in range(20):
            with budget.reserve(part):
                with lock:
                    outstanding += part
                    worst = max(worst, outstanding)
                time.sleep(0.001)
                with lock:
                    outstanding -= part

    threads = [_started(transfer, part) for part in (16, 16, 16, 16, 10, 10, 4, 4)]
    for t in threads:
        t.join(WAIT * 4)
        assert not t.is_alive()
    assert worst <= 40
    assert budget.peak <= 40
    assert budget.peak > 16  # transfers did share the budget
    assert budget.held == 0


def test_a_reservation_waits_until_bytes_are_released() -> None:
    budget = ByteBudget(32)
    budget.acquire(16)
    budget.acquire(16)
    waiter = _started(budget.acquire, 16)
    assert _blocked(waiter)
    budget.release(16)
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert budget.held == 32


def test_a_part_bigger_than_the_budget_proceeds_alone() -> None:
    budget = ByteBudget(10)
    budget.acquire(4)
    big = _started(budget.acquire, 25)
    assert _blocked(big)  # not while anything else is held
    budget.release(4)
    big.join(WAIT)
    assert not big.is_alive()
    assert budget.held == 25
    small = _started(budget.acquire, 1)
    assert _blocked(small)  # and nothing joins it
    budget.release(25)
    small.join(WAIT)
    assert not small.is_alive()


def test_an_oversized_part_alone_does_not_wait() -> None:
    budget = ByteBudget(10)
    with budget.reserve(100):
        assert budget.held == 100
    assert budget.held == 0


def test_waiters_are_served_in_arrival_order() -> None:
    budget = ByteBudget(20)
    budget.acquire(15)
    order: list[str] = []
    big = _started(lambda: (budget.acquire(20), order.append("big")))
    assert _blocked(big)
    # 5 bytes are free and fit this one, but the big one asked first: it must not be overtaken.
    small = _started(lambda: (budget.acquire(5), order.append("small")))
    assert _blocked(small)
    budget.release(15)
    big.join(WAIT)
    assert order == ["big"]
    assert _blocked(small)
    budget.release(20)
    small.join(WAIT)
    assert order == ["big", "small"]


def test_released_when_the_block_raises() -> None:
    budget = ByteBudget(16)
    with pytest.raises(RuntimeError), budget.reserve(16):
        raise RuntimeError("upload failed")
    assert budget.held == 0
    with budget.reserve(16):  # usable again, no deadlock
        assert budget.held == 16


def test_release_more_than_held_is_an_error() -> None:
    budget = ByteBudget(16)
    budget.acquire(4)
    with pytest.raises(ValueError):
        budget.release(5)
    with pytest.raises(ValueError):
        budget.acquire(-1)
    assert budget.held == 4


MIB = 1024 * 1024


def test_a_returned_buffer_is_lent_again_while_other_transfers_run() -> None:
    budget = ByteBudget(4 * MIB)
    with budget.buffer(MIB):  # another transfer: something stays held
        with budget.buffer(2 * MIB) as first:
            first[:3] = b"abc"
        assert budget.kept == 2 * MIB
        with budget.buffer(2 * MIB) as second:
            assert second is first and budget.kept == 0
        with budget.buffer(MIB) as other_size:
            assert other_size is not first and len(other_size) == MIB


def test_kept_buffers_are_dropped_when_nothing_is_held() -> None:
    budget = ByteBudget(4 * MIB)
    with budget.buffer(2 * MIB):
        pass
    assert budget.kept == 0 and budget.held == 0


def test_kept_and_lent_buffers_stay_within_the_capacity() -> None:
    budget = ByteBudget(4 * MIB)
    with budget.buffer(MIB):
        for size in (2 * MIB, 3 * MIB, 2 * MIB + 1, 3 * MIB):
            with budget.buffer(size) as buf:
                assert len(buf) == size
                assert budget.kept + budget.held <= 4 * MIB
            assert budget.kept + budget.held <= 4 * MIB


def test_small_buffers_are_not_kept() -> None:
    budget = ByteBudget(4 * MIB)
    with budget.buffer(MIB):
        with budget.buffer(1000) as small:
            assert len(small) == 1000
        assert budget.kept == 0


def test_a_buffer_goes_back_when_its_block_raises() -> None:
    budget = ByteBudget(4 * MIB)
    with budget.buffer(MIB):
        with pytest.raises(RuntimeError), budget.buffer(2 * MIB):
            raise RuntimeError("upload failed")
        assert budget.held == MIB and budget.kept == 2 * MIB

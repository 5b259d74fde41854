"""The transactional loop's watchdog: a transaction still not committed after two transaction timeouts (librdkafka
can block in send_offsets_to_transaction for ever once the coordinator's broker restarted) ends the process with
EXIT_STUCK, so that it is restarted, instead of hanging; a transaction that commits in time is left alone."""

from __future__ import annotations

import time
from typing import Any

import pytest

from layerfill.config.settings import KafkaSettings
from layerfill.kafka import txloop
from layerfill.kafka.txloop import EXIT_STUCK, LoopConfig, Outcome, TransactionalLoop

pytestmark = pytest.mark.unit


class FakeProducer:
    """Just the transactional calls `_commit` makes; send_offsets_to_transaction blocks for `block_s`."""

    def __init__(self, block_s: float) -> None:
        self.block_s = block_s
        self.committed = 0

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(self, *_: Any) -> None:
        time.sleep(self.block_s)

    def commit_transaction(self, *_: Any) -> None:
        self.committed += 1


class FakeConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


def _loop(timeout_ms: int) -> TransactionalLoop:
    # No broker is contacted: librdkafka clients connect lazily.
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"transaction.timeout.ms": str(timeout_ms)})
    return TransactionalLoop(kafka, LoopConfig("t", "g", "tx", ["in"], None), lambda msgs: [])


def test_stuck_after_is_two_transaction_timeouts_and_the_setting_reaches_the_producer() -> None:
    assert _loop(1500).stuck_after_s == 3.0
    assert TransactionalLoop(KafkaSettings(bootstrap_servers="127.0.0.1:1"), LoopConfig("t", "g", "tx", ["in"], None),
                             lambda msgs: []).stuck_after_s == 120.0  # fmt: skip


@pytest.mark.parametrize(("block_s", "exits"), [(2.5, True), (0.0, False)])
def test_a_stuck_transaction_exits_the_process(monkeypatch: pytest.MonkeyPatch, block_s: float, exits: bool) -> None:
    loop = _loop(1000)  # stuck after 2 s
    exits_with: list[int] = []
    monkeypatch.setattr(txloop.os, "_exit", exits_with.append)
    loop.producer = FakeProducer(block_s)  # type: ignore[assignment]
    loop.consumer = FakeConsumer()  # type: ignore[assignment]
    after: list[bool] = []

    loop._commit([Outcome(records=[], after_commit=lambda: after.append(True))], {("in", 0): 1})
    time.sleep(2.2)  # past the deadline whatever happened: a cancelled watchdog must stay quiet
    assert exits_with == ([EXIT_STUCK] if exits else [])
    assert (loop._fatal is not None) is exits
    assert after == [True]  # (the real process is gone by then; the fake returns)


class FlakyCommittedConsumer:
    """committed() fails like a consumer whose coordinator is moving, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seeks: list[tuple[str, int, int]] = []

    def assignment(self) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition("in", 0)]

    def committed(self, parts: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Broker: Not coordinator"))
        return [TopicPartition("in", 0, 7)]

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def test_rewind_asks_again_while_the_coordinator_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = _loop(1000)
    loop.consumer = FlakyCommittedConsumer(failures=2)  # type: ignore[assignment]
    monkeypatch.setattr(loop._stop, "wait", lambda delay: False)  # no real sleeping
    loop._rewind()
    assert loop.consumer.seeks == [("in", 0, 7)]  # type: ignore[attr-defined]


def test_rewind_gives_up_quietly_when_the_loop_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = _loop(1000)
    loop.consumer = FlakyCommittedConsumer(failures=100)  # type: ignore[assignment]
    loop.stop()
    loop._rewind()
    assert loop.consumer.seeks == []  # type: ignore[attr-defined]

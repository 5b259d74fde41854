"""The transactional loop's batching (layerfill.kafka.txloop): one batch's outputs and offsets in one
transaction, after-commit steps only once it is committed, quiet batches (repeats that emit nothing) committed
later together, retry-topic records held until due, and an aborted transaction rewound and recorded nowhere.
Outcomes that finish later (futures of the stage's pool) commit as they finish, a partition's in offset order,
without waiting for other partitions; a partition with too many records in flight is paused.
The Kafka clients are replaced by fakes of the calls the loop makes; no broker is involved."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from layerfill.config.settings import KafkaSettings
from layerfill.kafka import txloop
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.retry import DUE_MS
from layerfill.kafka.txloop import LoopConfig, Outcome, TransactionalLoop

pytestmark = pytest.mark.unit

IN, RETRY = "in", "in.retry"


class FakeProducer:
    def __init__(self, fail_commit: KafkaError | None = None) -> None:
        self.calls: list[Any] = []
        self.fail_commit = fail_commit

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: list[Any]) -> None:
        self.calls.append(("produce", topic, value))

    def send_offsets_to_transaction(self, parts: list[TopicPartition], *_: Any) -> None:
        self.calls.append(("offsets", sorted((p.topic, p.partition, p.offset) for p in parts)))

    def commit_transaction(self, *_: Any) -> None:
        if self.fail_commit is not None:
            raise KafkaException(self.fail_commit)
        self.calls.append("commit")

    def abort_transaction(self, *_: Any) -> None:
        self.calls.append("abort")

    def transactions(self) -> int:
        return self.calls.count("begin")


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: list[tuple[str, int, int]] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.resumed: list[tuple[str, int]] = []
        self.committed_offsets = [TopicPartition(IN, 0, 3)]

    def consumer_group_metadata(self) -> object:
        return object()

    def pause(self, parts: list[TopicPartition]) -> None:
        self.paused += [(p.topic, p.partition, p.offset) for p in parts]

    def resume(self, parts: list[TopicPartition]) -> None:
        self.resumed += [(p.topic, p.partition) for p in parts]

    def seek(self, p: TopicPartition) -> None:
        self.seeks.append((p.topic, p.partition, p.offset))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(IN, 0)]

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return self.committed_offsets


def msg(offset: int, *, topic: str = IN, partition: int = 0, headers: list[Any] | None = None) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=b"k", value=b"v%d" % offset,
                   headers=headers or [])  # fmt: skip


def make_loop(
    handle: Any, producer: FakeProducer | None = None, **config: Any
) -> tuple[TransactionalLoop, FakeProducer, FakeConsumer]:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"log_level": "0"})
    discarded = config.pop("discarded", None)
    on_discard = (lambda: discarded.append(True)) if discarded is not None else None
    loop = TransactionalLoop(kafka, LoopConfig("t", "g", "tx", [IN, RETRY], RETRY, **config), handle,
                             on_discard=on_discard)  # fmt: skip
    fp, fc = producer or FakeProducer(), FakeConsumer()
    loop.producer, loop.consumer = fp, fc  # type: ignore[assignment]
    return loop, fp, fc


def emitting(msgs: list[Message]) -> list[Outcome]:
    return [Outcome(records=[OutRecord("out", None, m.value(), [])], label="done") for m in msgs]


def test_outputs_and_offsets_commit_in_one_transaction_and_after_commit_runs_once_committed() -> None:
    seen_at_after: list[list[Any]] = []
    loop: TransactionalLoop

    def handle(msgs: list[Message]) -> list[Outcome]:
        outs = emitting(msgs)
        outs[0].after_commit = lambda: seen_at_after.append(list(fp.calls))
        return outs

    loop, fp, _ = make_loop(handle)
    loop.process_batch([msg(5), msg(6), msg(2, partition=1)])
    assert fp.calls == [
        "begin", ("produce", "out", b"v5"), ("produce", "out", b"v6"), ("produce", "out", b"v2"),
        ("offsets", [(IN, 0, 7), (IN, 1, 3)]), "commit",
    ]  # fmt: skip
    assert seen_at_after == [fp.calls]  # after the commit, not before


def test_quiet_batches_wait_and_commit_with_the_next_batch_that_emits() -> None:
    quiet = True

    def handle(msgs: list[Message]) -> list[Outcome]:
        return [Outcome(label="repeat") for _ in msgs] if quiet else emitting(msgs)

    loop, fp, _ = make_loop(handle)
    loop.process_batch([msg(1), msg(2)])
    loop.process_batch([msg(0, partition=1)])
    assert fp.transactions() == 0  # repeats alone cost no transaction
    quiet = False
    loop.process_batch([msg(3)])
    assert fp.transactions() == 1
    assert ("offsets", [(IN, 0, 4), (IN, 1, 1)]) in fp.calls  # the quiet partition's offset rides along


def test_quiet_offsets_are_committed_after_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    loop, fp, _ = make_loop(lambda msgs: [Outcome(label="repeat") for _ in msgs])
    loop.process_batch([msg(1)])
    assert fp.transactions() == 0
    monkeypatch.setattr(txloop, "QUIET_COMMIT_INTERVAL_S", 0.0)
    loop.process_batch([msg(2)])
    assert fp.calls == ["begin", ("offsets", [(IN, 0, 3)]), "commit"]


def test_an_outcome_with_only_an_after_commit_step_is_not_quiet() -> None:
    done: list[bool] = []
    loop, fp, _ = make_loop(lambda msgs: [Outcome(after_commit=lambda: done.append(True)) for _ in msgs])
    loop.process_batch([msg(1)])
    assert fp.transactions() == 1 and done == [True]


def test_retry_records_not_due_pause_their_partition_and_the_rest_of_it_waits() -> None:
    handled: list[tuple[str, int, int]] = []

    def handle(msgs: list[Message]) -> list[Outcome]:
        handled.extend((m.topic(), m.partition(), m.offset()) for m in msgs)
        return emitting(msgs)

    later = int(time.time() * 1000) + 60_000
    loop, fp, fc = make_loop(handle)
    loop.process_batch([
        msg(1, topic=RETRY, headers=[(DUE_MS, b"1")]),  # due long ago
        msg(2, topic=RETRY, headers=[(DUE_MS, str(later).encode())]),
        msg(3, topic=RETRY),  # behind a record that is not due: held too
        msg(9),
    ])  # fmt: skip
    assert handled == [(RETRY, 0, 1), (IN, 0, 9)]
    assert fc.paused == [(RETRY, 0, 2)] and fc.seeks == [(RETRY, 0, 2)] and loop.paused == {(RETRY, 0): later}
    assert ("offsets", [(IN, 0, 10), (RETRY, 0, 2)]) in fp.calls


def test_a_batch_of_records_none_due_starts_no_transaction() -> None:
    later = str(int(time.time() * 1000) + 60_000).encode()
    loop, fp, _ = make_loop(lambda msgs: pytest.fail("nothing is due"))
    loop.process_batch([msg(1, topic=RETRY, headers=[(DUE_MS, later)])])
    assert fp.calls == []


def test_an_aborted_transaction_rewinds_and_records_nothing() -> None:
    done: list[bool] = []

    def handle(msgs: list[Message]) -> list[Outcome]:
        outs = emitting(msgs)
        outs[0].after_commit = lambda: done.append(True)
        return outs

    loop, fp, fc = make_loop(handle, FakeProducer(fail_commit=KafkaError(KafkaError._TIMED_OUT, "coordinator gone")))
    loop.process_batch([msg(3), msg(4)])
    assert fp.calls[-1] == "abort" and "commit" not in fp.calls
    assert done == []  # nothing of the batch was committed: the state DB must not say it was
    assert fc.seeks == [(IN, 0, 3)]  # back to the committed offset: the batch is consumed again


def test_a_fatal_transaction_error_stops_the_loop() -> None:
    fatal = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    loop, _, _ = make_loop(emitting, FakeProducer(fail_commit=fatal))
    with pytest.raises(txloop.FatalError, match="fenced"):
        loop.process_batch([msg(1)])


# -- outcomes that finish later ---------------------------------------------------------------------------
def later() -> Future[Outcome]:
    """A future the test finishes, standing in for the stage's pool."""
    return Future()


def finish(f: Future[Outcome], value: bytes) -> None:
    f.set_result(Outcome(records=[OutRecord("out", None, value, [])]))


def test_a_slow_image_holds_back_only_its_own_partition() -> None:
    slow = later()

    def handle(msgs: list[Message]) -> list[Any]:
        return [slow if m.partition() == 0 else emitting([m])[0] for m in msgs]

    loop, fp, _ = make_loop(handle, commit_interval_s=0)
    loop.process_batch([msg(5), msg(2, partition=1)])
    assert fp.calls == ["begin", ("produce", "out", b"v2"), ("offsets", [(IN, 1, 3)]), "commit"]
    assert loop.in_flight == 1
    finish(slow, b"slow")
    loop.flush()
    assert fp.calls[-3:] == [("produce", "out", b"slow"), ("offsets", [(IN, 0, 6)]), "commit"]
    assert loop.in_flight == 0


def test_a_partition_commits_in_offset_order_whatever_finishes_first() -> None:
    first, second = later(), later()
    loop, fp, _ = make_loop(lambda msgs: [first, second])
    loop.process_batch([msg(5), msg(6)])
    finish(second, b"second")
    loop.flush()
    assert fp.transactions() == 0  # offset 7 cannot be committed while offset 5 has no outcome
    finish(first, b"first")
    loop.flush()
    assert fp.calls == [
        "begin", ("produce", "out", b"first"), ("produce", "out", b"second"), ("offsets", [(IN, 0, 7)]), "commit",
    ]  # fmt: skip


def test_outcomes_finishing_within_the_commit_interval_share_a_transaction() -> None:
    a, b = later(), later()
    loop, fp, _ = make_loop(lambda msgs: [a] if msgs[0].partition() == 0 else [b], commit_interval_s=3600)
    loop.process_batch([msg(1)])
    loop.process_batch([msg(1, partition=1)])
    finish(a, b"a")
    loop.flush()  # the first commit is never held back
    assert fp.transactions() == 1
    finish(b, b"b")
    loop.flush()
    assert fp.transactions() == 1  # within the interval: waits
    loop.flush(force=True)
    assert fp.transactions() == 2 and ("offsets", [(IN, 1, 2)]) in fp.calls


def test_a_partition_with_max_pending_records_in_flight_is_paused_until_half_drain() -> None:
    futures = [later() for _ in range(4)]
    loop, _, fc = make_loop(lambda msgs: futures[: len(msgs)], max_pending=4)
    loop.process_batch([msg(10), msg(11), msg(12), msg(13)])
    assert fc.paused == [(IN, 0, 14)] and fc.seeks == [(IN, 0, 14)]  # resumes right after the last record taken
    finish(futures[0], b"0")
    loop.flush()
    assert fc.resumed == []  # 3 of 4 still in flight
    finish(futures[1], b"1")
    loop.flush()
    assert fc.resumed == [(IN, 0)]


def test_an_aborted_transaction_discards_what_is_in_flight() -> None:
    slow = later()
    discarded: list[bool] = []
    loop, fp, _ = make_loop(
        lambda msgs: [slow if m.partition() == 0 else emitting([m])[0] for m in msgs],
        FakeProducer(fail_commit=KafkaError(KafkaError._TIMED_OUT, "coordinator gone")),
        discarded=discarded,
    )
    loop.process_batch([msg(5), msg(2, partition=1)])
    assert fp.calls[-1] == "abort" and discarded == [True]
    assert loop.in_flight == 0  # the slow image's record is consumed again from the committed offset
    finish(slow, b"late")
    loop.flush()
    assert ("produce", "out", b"late") not in fp.calls


def test_drain_waits_for_everything_in_flight_and_commits_it() -> None:
    slow = later()
    loop, fp, _ = make_loop(lambda msgs: [slow])
    loop.process_batch([msg(1)])
    threading.Timer(0.05, finish, (slow, b"slow")).start()
    loop.drain()
    assert fp.calls == ["begin", ("produce", "out", b"slow"), ("offsets", [(IN, 0, 2)]), "commit"]


def test_revoked_partitions_are_drained_and_committed_before_they_go() -> None:
    slow = later()
    slow.set_running_or_notify_cancel()
    loop, fp, fc = make_loop(lambda msgs: [slow])
    loop.process_batch([msg(1)])
    threading.Timer(0.05, finish, (slow, b"slow")).start()
    loop._on_revoke(fc, [TopicPartition(IN, 0)])  # type: ignore[arg-type]
    assert ("offsets", [(IN, 0, 2)]) in fp.calls and loop.in_flight == 0


def test_stopping_waits_for_running_work_and_leaves_queued_work_uncommitted() -> None:
    running, queued, after = later(), later(), later()
    running.set_running_or_notify_cancel()  # started on the pool; the others wait in its queue
    discarded: list[bool] = []
    loop, fp, _ = make_loop(lambda msgs: [running, queued, after], discarded=discarded)
    loop.process_batch([msg(1), msg(2), msg(3)])
    threading.Timer(0.05, finish, (running, b"running")).start()
    loop.drain(cancel={(IN, 0)})
    assert queued.cancelled() and after.cancelled()
    assert fp.calls == ["begin", ("produce", "out", b"running"), ("offsets", [(IN, 0, 2)]), "commit"]
    assert loop.in_flight == 0 and discarded == [True]  # offsets 2 and 3 are consumed again by the next owner


def test_the_consumer_refetches_soon_after_a_pause_unless_the_operator_says_otherwise() -> None:
    cfg = LoopConfig("t", "g", "tx", [IN], None)
    conf = txloop.consumer_config(KafkaSettings(bootstrap_servers="127.0.0.1:1"), cfg)
    assert conf["fetch.queue.backoff.ms"] == txloop.FETCH_QUEUE_BACKOFF_MS < 1000  # librdkafka's default: 1 s
    assert conf["isolation.level"] == "read_committed" and conf["enable.auto.commit"] is False
    tuned = KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"fetch.queue.backoff.ms": "200"})
    assert txloop.consumer_config(tuned, cfg)["fetch.queue.backoff.ms"] == "200"

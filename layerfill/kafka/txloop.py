"""The exactly-once loop of every consumer stage: consume a batch, let the stage turn it into outcomes, and commit
the outcomes' records together with the consumed offsets in one Kafka transaction.

An input offset is committed only with the outcome of its event (the stage's outputs, a retry, a dead letter).
A crash or an aborted transaction before the commit means the batch is consumed again, so stages must be
idempotent. Records on the stage's retry topic are held back until the time in their due header: the loop
pauses that partition, seeks back to the record, and resumes it when it is due (a delayed queue).

Side effects that must only happen once the outputs are committed (state DB updates) go in an outcome's
`after_commit`.

Offsets of batches that emit nothing and need no after-commit step (repeats of events already handled) are
committed at most every QUIET_COMMIT_INTERVAL_S, when the topics run dry, or with the next batch that emits
something: a transaction costs ~10 ms of broker round trips, which per 500 repeats was a third of the fetcher's
firehose time (bench/firehose.py, cProfile). A crash before that commit redelivers the repeats, which emit
nothing again."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Gauge, Histogram

from layerfill.config.settings import KafkaSettings
from layerfill.kafka.observe import observed
from layerfill.kafka.producer import OutRecord, producer_config
from layerfill.kafka.retry import read_retry_headers
from layerfill.observability.http import serve_health

QUIET_COMMIT_INTERVAL_S = 1.0
TRANSACTION_TIMEOUT_MS = 60_000  # kafka.extra["transaction.timeout.ms"] overrides it
# A transaction still not committed after this many transaction timeouts is stuck: the coordinator has aborted it
# long ago, and librdkafka can block in send_offsets_to_transaction past its own timeout once the coordinator's
# broker restarted (confluentinc/librdkafka#5456, #5511), where nothing in the process can unblock it. The loop
# then exits (EXIT_STUCK) so that it is restarted; nothing of the batch was committed, so it is consumed again.
STUCK_AFTER_TIMEOUTS = 2
EXIT_STUCK = 75  # EX_TEMPFAIL


@dataclass
class Outcome:
    """What one consumed event led to: records to commit with its offset, and what to do once they are."""

    records: list[OutRecord] = field(default_factory=list)
    label: str = "done"
    after_commit: Callable[[], None] | None = None

    @property
    def quiet(self) -> bool:
        return not self.records and self.after_commit is None


class FatalError(RuntimeError):
    """The loop cannot go on (fenced by another instance, a fatal consumer error): the process should exit."""


@dataclass(frozen=True)
class LoopConfig:
    stage: str  # "fetcher", "scanner": names logs and errors
    group_id: str
    transactional_id: str  # unique per running process, stable across its restarts
    topics: Sequence[str]
    retry_topic: str | None  # records here wait for their due header
    batch_size: int = 500
    max_poll_interval_ms: int = 900_000
    health_port: int | None = None


@dataclass(frozen=True)
class LoopMetrics:
    batch_seconds: Histogram | None = None
    lag: Gauge | None = None  # labels: topic, partition


BatchHandler = Callable[[list[Message]], list[Outcome]]


class TransactionalLoop:
    def __init__(
        self,
        kafka: KafkaSettings,
        config: LoopConfig,
        handle: BatchHandler,
        *,
        metrics: LoopMetrics | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.handle = handle
        self.metrics = metrics or LoopMetrics()
        self.log = logger or logging.getLogger(f"layerfill.{config.stage}")
        stats_ms = kafka.statistics_interval_ms
        self.consumer = Consumer(
            observed(
                {
                    **kafka.client_config(),
                    "group.id": config.group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "max.poll.interval.ms": config.max_poll_interval_ms,
                },
                f"{config.stage}-consumer",
                stats_ms,
            )
        )
        # The acked producer's settings, plus a transactional.id; a record may take as long as its transaction.
        tx_timeout_ms = int(kafka.extra.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS))
        self.stuck_after_s = STUCK_AFTER_TIMEOUTS * tx_timeout_ms / 1000
        self.producer = Producer(
            observed(
                producer_config(
                    kafka,
                    **{
                        "transactional.id": config.transactional_id,
                        "transaction.timeout.ms": tx_timeout_ms,
                        "message.timeout.ms": tx_timeout_ms,
                    },
                ),
                f"{config.stage}-producer",
                stats_ms,
            )
        )
        self.paused: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._ready = False
        self._fatal: str | None = None
        self._last_lag = 0.0
        self._quiet_offsets: dict[tuple[str, int], int] = {}
        self._quiet_since = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, *_: Any) -> None:
        """Graceful: the batch in hand finishes and commits; nothing new is started."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, on_close: Callable[[], None] | None = None) -> None:
        cfg = self.config
        if cfg.health_port:
            serve_health("0.0.0.0", cfg.health_port, lambda: self._fatal is None, lambda: self._ready)
        self.producer.init_transactions(60)
        self.consumer.subscribe(list(cfg.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._ready = True
        self.log.info(f"{cfg.stage} started", extra={"topics": ",".join(cfg.topics), "group": cfg.group_id})
        try:
            while not self._stop.is_set():
                self._resume_due()
                msgs = self._next_batch()
                if msgs:
                    if self.metrics.batch_seconds is not None:
                        with self.metrics.batch_seconds.time():
                            self.process_batch(msgs)
                    else:
                        self.process_batch(msgs)
                elif self._quiet_offsets:
                    self._commit([], {})
                self._report_lag()
            self._commit([], {})
        except FatalError as exc:
            self._fatal = str(exc)
            raise
        finally:
            self._ready = False
            self.consumer.close()
            if on_close is not None:
                on_close()
            self.log.info(f"{cfg.stage} stopped")

    def _next_batch(self) -> list[Message]:
        """Up to batch_size records, as soon as there are any. consume(n, timeout) waits out its whole timeout
        unless n records arrive, which held a lone event up to 0.5 s (bench/latency.py): wait for one record,
        then take what is already fetched."""
        size = self.config.batch_size
        msgs = self.consumer.consume(num_messages=size, timeout=0)
        if msgs:
            return msgs
        msgs = self.consumer.consume(num_messages=1, timeout=0.5)
        if msgs and size > 1:
            msgs += self.consumer.consume(num_messages=size - 1, timeout=0)
        return msgs

    # -- rebalance and retry pauses ----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.log.info("assigned", extra={"partitions": ",".join(f"{p.topic}[{p.partition}]" for p in partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches run inside the poll loop, so nothing is in flight when this is called.
        for p in partitions:
            self.paused.pop((p.topic, p.partition), None)
            # Uncommitted repeats of a revoked partition are redelivered to its next owner; they emit nothing.
            self._quiet_offsets.pop((p.topic, p.partition), None)

    def _resume_due(self) -> None:
        now = int(time.time() * 1000)
        due = [tp for tp, at in self.paused.items() if at <= now]
        if due:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self.paused[tp]

    # -- one batch ---------------------------------------------------------------------------------
    def process_batch(self, msgs: list[Message]) -> None:
        now_ms = int(time.time() * 1000)
        offsets: dict[tuple[str, int], int] = {}
        held: set[tuple[str, int]] = set()
        ready: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.log.warning("consume error", extra={"error": err.str()})
                    if err.fatal():
                        raise FatalError(err.str())
                continue
            tp = (m.topic(), m.partition())
            if tp in held:
                continue
            if m.topic() == self.config.retry_topic:
                due = read_retry_headers(m.headers()).due_ms
                if due > now_ms:
                    # Not due: rewind to it and pause the partition until it is.
                    part = TopicPartition(m.topic(), m.partition(), m.offset())
                    self.consumer.pause([part])
                    self.consumer.seek(part)
                    self.paused[tp] = due
                    held.add(tp)
                    continue
            offsets[tp] = m.offset() + 1
            ready.append(m)
        if not offsets:
            return
        self._commit(self.handle(ready), offsets)

    # -- the transaction ---------------------------------------------------------------------------
    def _commit(self, outcomes: list[Outcome], offsets: dict[tuple[str, int], int]) -> None:
        """Outputs and offsets in one transaction; a batch that emits nothing may wait for a later one."""
        if offsets and all(o.quiet for o in outcomes):
            if not self._quiet_offsets:
                self._quiet_since = time.monotonic()
            self._quiet_offsets.update(offsets)
            if time.monotonic() - self._quiet_since < QUIET_COMMIT_INTERVAL_S:
                return
        offsets = {**self._quiet_offsets, **offsets}
        self._quiet_offsets = {}
        if not offsets:
            return
        watchdog = threading.Timer(self.stuck_after_s, self._stuck)
        watchdog.daemon = True
        watchdog.start()
        try:
            self.producer.begin_transaction()
            for out in outcomes:
                for rec in out.records:
                    self._produce(rec)
            parts = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
            self.producer.send_offsets_to_transaction(parts, self.consumer.consumer_group_metadata(), 60)
            self._commit_with_retry()
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise FatalError(
                    f"Kafka transaction error: {err.str()} (another {self.config.stage} with transactional.id "
                    f"{self.config.transactional_id!r} may have fenced this one)"
                ) from exc
            self.log.warning("transaction aborted; the batch will be consumed again", extra={"error": err.str()})
            try:
                self.producer.abort_transaction(60)
            except KafkaException:
                self.log.exception("abort failed")
            self._rewind()
            return
        finally:
            watchdog.cancel()
        # Only now, with outputs and offsets committed, may the stage record that they are.
        for out in outcomes:
            if out.after_commit is not None:
                try:
                    out.after_commit()
                except Exception:
                    # Bookkeeping only (e.g. the state DB, a cache of what storage holds): never stop the loop.
                    self.log.exception("after-commit step failed", extra={"outcome": out.label})

    def _stuck(self) -> None:
        """The watchdog's verdict on a transaction that outlived STUCK_AFTER_TIMEOUTS timeouts: exit, to be restarted."""
        self._fatal = f"Kafka transaction not committed after {self.stuck_after_s:.0f} s"
        self.log.critical(
            f"{self._fatal}: exiting so that the {self.config.stage} restarts; the uncommitted batch is consumed again",
            extra={"transactional_id": self.config.transactional_id, "exit_code": EXIT_STUCK},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STUCK)  # the loop's thread is blocked in librdkafka: only exiting the process frees it

    def _produce(self, rec: OutRecord) -> None:
        while True:
            try:
                self.producer.produce(rec.topic, value=rec.value, key=rec.key, headers=list(rec.headers))
                return
            except BufferError:
                self.producer.poll(0.1)

    def _commit_with_retry(self) -> None:
        for attempt in range(5):
            try:
                self.producer.commit_transaction(60)
                return
            except KafkaException as exc:
                if exc.args[0].retriable() and attempt < 4:
                    time.sleep(1)
                    continue
                raise

    def _rewind(self) -> None:
        """Back to the committed offsets, so an aborted batch is processed again."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        delay = 1.0
        while True:
            try:
                committed = self.consumer.committed(assignment, timeout=30)
                break
            except KafkaException as exc:
                # The group coordinator moves while a broker restarts (NOT_COORDINATOR): ask again. The
                # transaction's watchdog, still armed here, bounds the wait by exiting for a restart.
                self.log.warning("committed offsets unavailable; asking again", extra={"error": str(exc)})
                if self._stop.wait(delay):
                    return  # shutting down: nothing is committed, the next owner resumes from the committed offsets
                delay = min(delay * 2, 10.0)
        for tp in committed:
            self.consumer.seek(
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            )

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 15:
            return
        self._last_lag = now
        # The producer's statistics and log lines are served only by its poll (the consumer's by consume).
        self.producer.poll(0)
        if self.metrics.lag is None:
            return
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                if tp.offset >= 0 and high >= 0:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
        except KafkaException:
            pass

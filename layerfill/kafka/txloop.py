"""The exactly-once loop of every consumer stage: consume records, let the stage turn each into an outcome (now,
or later on its pool), and commit outcomes' records together with the consumed offsets in Kafka transactions.

An input offset is committed only with the outcome of its event (the stage's outputs, a retry, a dead letter), and
a partition's offsets only in order: a record's outcome is committed once every earlier record of its partition
has one. Within that rule nothing waits for a batch: the loop keeps consuming while the stage's pool works, and
commits what is finished every `commit_interval_s` (issue 19: a batch that waited for its slowest image held every
other image's commit and the next batch back, so 4 processes gave x2.79 of one). A partition with
`max_pending` records consumed and not yet committed is paused until it drains to half of that, so memory is
bounded by settings whatever an image takes. A crash or an aborted transaction means everything not committed is
consumed again, so stages must be idempotent. Records on the stage's retry topic are held back until the time in
their due header: the loop pauses that partition, seeks back to the record, and resumes it when it is due.

Side effects that must only happen once the outputs are committed (state DB updates) go in an outcome's
`after_commit`.

Offsets of records that emit nothing and need no after-commit step (repeats of events already handled) are
committed at most every QUIET_COMMIT_INTERVAL_S, when the topics run dry, or with the next outcome that emits
something: a transaction costs ~10 ms of broker round trips, which per 500 repeats was a third of the fetcher's
firehose time (bench/firehose.py, cProfile). A crash before that commit redelivers the repeats, which emit
nothing again."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
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
WAIT_S = 0.05  # how long a consume waits while work is in flight: bounds how late a finished outcome is seen
TRANSACTION_TIMEOUT_MS = 60_000  # kafka.extra["transaction.timeout.ms"] overrides it
# librdkafka postpones a partition's next fetch by fetch.queue.backoff.ms (default 1 s) while its local queue is
# over the prefetch thresholds, which it is whenever the loop has paused it (max_pending, a retry not due) with
# records prefetched: after the resume and seek it waited out that second (a fresh fetcher's firehose stalled
# ~1 s on its first partition to reach max_pending). A short backoff only costs a cheap queue check per partition.
FETCH_QUEUE_BACKOFF_MS = 20  # kafka.extra["fetch.queue.backoff.ms"] overrides it
# A transaction still not committed after this many transaction timeouts is stuck: the coordinator has aborted it
# long ago, and librdkafka can block in send_offsets_to_transaction past its own timeout once the coordinator's
# broker restarted (confluentinc/librdkafka#5456, #5511), where nothing in the process can unblock it. The loop
# then exits (EXIT_STUCK) so that it is restarted; nothing of the batch was committed, so it is consumed again.
STUCK_AFTER_TIMEOUTS = 2
EXIT_STUCK = 75  # EX_TEMPFAIL

TP = tuple[str, int]


@dataclass
class Outcome:
    """What one consumed event led to: records to commit with its offset, and what to do once they are."""

    records: list[OutRecord] = field(default_factory=list)
    label: str = "done"
    after_commit: Callable[[], None] | None = None

    @property
    def quiet(self) -> bool:
        return not self.records and self.after_commit is None


# What the stage gives back for one record: its outcome now, or the pool's future of it.
Job = Outcome | Future[Outcome]


class FatalError(RuntimeError):
    """The loop cannot go on (fenced by another instance, a fatal consumer error): the process should exit."""


@dataclass(frozen=True)
class LoopConfig:
    stage: str  # "fetcher", "scanner": names logs and errors
    group_id: str
    transactional_id: str  # unique per running process, stable across its restarts
    topics: Sequence[str]
    retry_topic: str | None  # records here wait for their due header
    batch_size: int = 500  # records taken per consume
    max_poll_interval_ms: int = 900_000
    health_port: int | None = None
    # Finished outcomes are committed at most this often: one transaction (~10 ms) per finished image would cost
    # more than it saves on a busy stage; 0 commits each as soon as it is seen.
    commit_interval_s: float = 0.1
    max_pending: int = 1000  # records consumed and not committed, per partition, before it is paused


@dataclass(frozen=True)
class LoopMetrics:
    batch_seconds: Histogram | None = None  # per transaction: the oldest record's consume -> commit
    lag: Gauge | None = None  # labels: topic, partition


BatchHandler = Callable[[list[Message]], Sequence[Job]]


def consumer_config(kafka: KafkaSettings, config: LoopConfig) -> dict[str, Any]:
    """The loop's consumer: offsets only through its transactions, committed records only."""
    return {
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        **kafka.client_config(),
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": config.max_poll_interval_ms,
    }


def _done(job: Job) -> bool:
    """Finished with an outcome (a cancelled job has none: its record stays uncommitted)."""
    return isinstance(job, Outcome) or (job.done() and not job.cancelled())


class TransactionalLoop:
    def __init__(
        self,
        kafka: KafkaSettings,
        config: LoopConfig,
        handle: BatchHandler,
        *,
        metrics: LoopMetrics | None = None,
        logger: logging.Logger | None = None,
        on_discard: Callable[[], None] | None = None,
    ) -> None:
        """`handle` gets records in order and returns one job per record; `on_discard` is told when outcomes not
        committed were dropped (an aborted transaction): their records are consumed again."""
        self.config = config
        self.handle = handle
        self.on_discard = on_discard
        self.metrics = metrics or LoopMetrics()
        self.log = logger or logging.getLogger(f"layerfill.{config.stage}")
        stats_ms = kafka.statistics_interval_ms
        self.consumer = Consumer(observed(consumer_config(kafka, config), f"{config.stage}-consumer", stats_ms))
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
        self.paused: dict[TP, int] = {}  # retry-topic partitions waiting for a record's due time
        self._stop = threading.Event()
        self._ready = False
        self._fatal: str | None = None
        self._last_lag = 0.0
        # Consumed and not committed: per partition, in offset order, (next offset, job, consumed at).
        self._pending: dict[TP, deque[tuple[int, Job, float]]] = {}
        self._full: set[TP] = set()  # paused because max_pending of their records are not committed
        # Finished, in partition order, not yet committed: the outcomes that do something, and the offsets.
        self._outcomes: list[Outcome] = []
        self._offsets: dict[TP, int] = {}
        self._oldest: float | None = None  # when the oldest of those was consumed
        self._finished_since = 0.0  # when the first of those was seen finished
        self._last_commit = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, *_: Any) -> None:
        """Graceful: what was started finishes and commits; nothing new is started."""
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
                    self.process_batch(msgs)
                else:
                    # Topics dry (or everything paused): commit what is finished, repeats included.
                    self.flush(force=not self.in_flight)
                self._report_lag()
            self.drain(cancel=set(self._pending))
        except FatalError as exc:
            self._fatal = str(exc)
            raise
        finally:
            self._ready = False
            self.consumer.close()
            if on_close is not None:
                on_close()
            self.log.info(f"{cfg.stage} stopped")

    @property
    def in_flight(self) -> int:
        """Records consumed whose outcome is not committed yet."""
        return sum(len(q) for q in self._pending.values())

    def _next_batch(self) -> list[Message]:
        """Up to batch_size records, as soon as there are any. consume(n, timeout) waits out its whole timeout
        unless n records arrive, which held a lone event up to 0.5 s (bench/latency.py): wait for one record,
        then take what is already fetched. While work is in flight the wait is short, so that finished
        outcomes are committed soon."""
        size = self.config.batch_size
        msgs = self.consumer.consume(num_messages=size, timeout=0)
        if msgs:
            return msgs
        msgs = self.consumer.consume(num_messages=1, timeout=WAIT_S if self.in_flight else 0.5)
        if msgs and size > 1:
            msgs += self.consumer.consume(num_messages=size - 1, timeout=0)
        return msgs

    # -- rebalance and pauses ----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.log.info("assigned", extra={"partitions": ",".join(f"{p.topic}[{p.partition}]" for p in partitions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called from within consume: finish and commit what was started (as a batch used to finish before the
        # next poll), so the partitions' next owner starts after it and nothing is done twice. After a fatal error
        # (closing) nothing can be committed: the next owner consumes it again.
        revoked = {(p.topic, p.partition) for p in partitions}
        if self._fatal is None:
            self.drain(rewind=False, cancel=revoked)
        for p in partitions:
            tp = (p.topic, p.partition)
            self.paused.pop(tp, None)
            self._full.discard(tp)
            self._pending.pop(tp, None)

    def _resume_due(self) -> None:
        now = int(time.time() * 1000)
        due = [tp for tp, at in self.paused.items() if at <= now]
        if due:
            for tp in due:
                del self.paused[tp]
            resume = [TopicPartition(t, p) for t, p in due if (t, p) not in self._full]
            if resume:
                self.consumer.resume(resume)

    def _throttle(self, tp: TP) -> None:
        """Pause a partition with max_pending records in flight; resume it once half of them are committed."""
        n = len(self._pending.get(tp, ()))
        if tp not in self._full and n >= self.config.max_pending:
            q = self._pending[tp]
            part = TopicPartition(tp[0], tp[1], q[-1][0])
            self.consumer.pause([part])
            self.consumer.seek(part)  # resume exactly after the last record taken, whatever was prefetched
            self._full.add(tp)
        elif tp in self._full and n <= self.config.max_pending // 2:
            self._full.discard(tp)
            if tp not in self.paused:
                self.consumer.resume([TopicPartition(tp[0], tp[1])])

    # -- records in ----------------------------------------------------------------------------------
    def process_batch(self, msgs: list[Message]) -> None:
        """Hand the due records to the stage, then commit what has finished (here or on the pool)."""
        now_ms = int(time.time() * 1000)
        retry_topic = self.config.retry_topic
        held: set[TP] = set()
        ready: list[Message] = []
        tps: list[TP] = []  # each ready record's partition, read once (the firehose does this 100,000 times/s)
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.log.warning("consume error", extra={"error": err.str()})
                    if err.fatal():
                        raise FatalError(err.str())
                continue
            topic = m.topic()
            tp = (topic, m.partition())
            if held and tp in held:
                continue
            if topic == retry_topic:
                due = read_retry_headers(m.headers()).due_ms
                if due > now_ms:
                    # Not due: rewind to it and pause the partition until it is.
                    part = TopicPartition(topic, tp[1], m.offset())
                    self.consumer.pause([part])
                    self.consumer.seek(part)
                    self.paused[tp] = due
                    held.add(tp)
                    continue
            ready.append(m)
            tps.append(tp)
        if ready:
            self._take(ready, tps, self.handle(ready))
        self.flush()

    def _take(self, ready: list[Message], tps: list[TP], jobs: Sequence[Job]) -> None:
        """Queue each record's job behind its partition's records in flight. A quiet outcome of a partition with
        nothing in flight is finished at once: only its offset is kept (the firehose's repeats take this path; a
        queue entry per record cost as much as the consume)."""
        now = time.monotonic()
        pending = self._pending
        offsets = self._offsets
        had_offsets = bool(offsets)
        quiet_done = False
        touched: set[TP] = set()
        for m, tp, job in zip(ready, tps, jobs, strict=True):
            q = pending.get(tp)
            if q is None and isinstance(job, Outcome):
                if job.records or job.after_commit is not None:
                    self._finished(tp, m.offset() + 1, job, now, now)
                else:
                    offsets[tp] = m.offset() + 1
                    quiet_done = True
                continue
            if q is None:
                q = pending[tp] = deque()
            q.append((m.offset() + 1, job, now))
            touched.add(tp)
        if quiet_done:
            # What _finished does per record, once for the quiet ones.
            if not had_offsets:
                self._finished_since = now
            if self._oldest is None:
                self._oldest = now
        for tp in touched:
            self._throttle(tp)

    # -- records out ---------------------------------------------------------------------------------
    def _finished(self, tp: TP, offset: int, out: Outcome, consumed_at: float, now: float) -> None:
        """`out` is the outcome of the record before `offset`, and every earlier record of `tp` has one."""
        if not out.quiet:
            self._outcomes.append(out)
        if not self._offsets:
            self._finished_since = now
        self._offsets[tp] = offset
        if self._oldest is None or consumed_at < self._oldest:
            self._oldest = consumed_at

    def _collect(self) -> None:
        """Move every partition's finished prefix from pending to what the next transaction commits."""
        now = time.monotonic()
        drained: list[TP] = []
        for tp, q in self._pending.items():
            moved = False
            while q and _done(q[0][1]):
                offset, job, consumed_at = q.popleft()
                out = job if isinstance(job, Outcome) else job.result()  # a stage's bug stops the process
                self._finished(tp, offset, out, consumed_at, now)
                moved = True
            if moved:
                self._throttle(tp)
            if not q:
                drained.append(tp)
        for tp in drained:
            del self._pending[tp]  # none in flight: the next record of tp may take the fast path

    def flush(self, *, force: bool = False) -> None:
        """Commit what has finished: outcomes that emit at most every commit_interval_s, repeats (quiet) at most
        every QUIET_COMMIT_INTERVAL_S unless `force`."""
        self._collect()
        if not self._offsets:
            return
        now = time.monotonic()
        if not force:
            if self._outcomes:
                if now - self._last_commit < self.config.commit_interval_s:
                    return
            elif now - self._finished_since < QUIET_COMMIT_INTERVAL_S:
                return
        self._commit(self._outcomes, self._offsets)

    def drain(self, *, rewind: bool = True, cancel: set[TP] | None = None) -> None:
        """Wait for the work in flight and commit it (stopping, or partitions revoked). Work of the partitions in
        `cancel` that the pool has not started is cancelled and forgotten instead: its records are consumed again
        by whoever owns the partition next, so a shutdown waits for what is running, not for a queue."""
        for tp in cancel or ():
            for _, job, _ in self._pending.get(tp, ()):
                if not isinstance(job, Outcome):
                    job.cancel()  # only succeeds if it has not started
        futures = [job for q in self._pending.values() for _, job, _ in q if not isinstance(job, Outcome)]
        wait([f for f in futures if not f.cancelled()])
        self._collect()
        if self._offsets:
            self._commit(self._outcomes, self._offsets, rewind=rewind)
        forgotten = 0
        for tp in cancel or ():
            forgotten += len(self._pending.pop(tp, ()))
            self._full.discard(tp)
        if forgotten and self.on_discard is not None:
            self.on_discard()

    def _discard(self) -> None:
        """Forget everything not committed: it is consumed again from the committed offsets."""
        for tp in self._full:
            if tp not in self.paused:
                self.consumer.resume([TopicPartition(tp[0], tp[1])])
        self._full.clear()
        self._pending.clear()
        self._outcomes, self._offsets, self._oldest = [], {}, None
        if self.on_discard is not None:
            self.on_discard()

    # -- the transaction ---------------------------------------------------------------------------
    def _commit(self, outcomes: list[Outcome], offsets: dict[TP, int], *, rewind: bool = True) -> None:
        """Outputs and offsets in one transaction; after-commit steps once it is committed."""
        oldest = self._oldest
        self._outcomes, self._offsets, self._oldest = [], {}, None
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
            self.log.warning("transaction aborted; what it held will be consumed again", extra={"error": err.str()})
            try:
                self.producer.abort_transaction(60)
            except KafkaException:
                self.log.exception("abort failed")
            self._discard()
            if rewind:
                self._rewind()
            return
        finally:
            watchdog.cancel()
        self._last_commit = time.monotonic()
        if self.metrics.batch_seconds is not None and oldest is not None:
            self.metrics.batch_seconds.observe(self._last_commit - oldest)
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

"""A consumer stage on the transactional loop: decode -> triage -> handle -> outputs, and state changes applied
only once the outputs are committed. The fetcher and the scanner are two subclasses.

Per batch, in the loop's thread: every record is decoded (an undecodable one is dead-lettered) and triaged (cheap
decisions: repeats, duplicates within the batch, invalid events; an error here dead-letters the record). What
triage leaves is handled on the stage's pool, which may run a unit of work again in process
(`retry_in_process`), and a failure becomes one outcome (`fail`): the same bytes on the stage's retry topic, or
on the dead-letter topic once the retries are used up or the error is permanent (layerfill.kafka.classify).

Whatever a stage records about an event (the state DB, caches the loop consults) goes in the outcome's
`after_commit`: a write before the commit would describe outputs that an aborted transaction never published."""

from __future__ import annotations

import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter as Tally
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from confluent_kafka import Message
from prometheus_client import Counter, Gauge, Histogram

from layerfill.config.settings import Settings, StageSettings
from layerfill.kafka.classify import describe, is_transient
from layerfill.kafka.failures import dead_letter_record, retry_record
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.retry import RetryInfo, in_process_pause, next_step, read_retry_headers
from layerfill.kafka.txloop import Job, LoopConfig, LoopMetrics, Outcome, TransactionalLoop
from layerfill.serde.codec import EventCodec
from layerfill.serde.records import Record
from layerfill.wiring import make_codec

E = TypeVar("E", bound=Record)
T = TypeVar("T")

# What triage decides for one event: an outcome now, or None (the stage's `handle`, on the pool).
Triaged = Outcome | None


@dataclass(frozen=True)
class StageTopics:
    input: str
    retry: str
    dlq: str


@dataclass(frozen=True)
class StageMetrics:
    events: Counter  # labels: outcome
    dead_letters: Counter  # labels: error_class
    retries: Counter  # labels: where (in_process, retry_topic)
    batch_seconds: Histogram | None = None
    lag: Gauge | None = None

    @classmethod
    def named(cls, stage: str, events_help: str) -> StageMetrics:
        """The metrics every stage exports, as layerfill_<stage>_*; `events_help` names its events' outcomes."""
        return cls(
            events=Counter(f"layerfill_{stage}_events_total", events_help, ["outcome"]),
            dead_letters=Counter(
                f"layerfill_{stage}_dead_letters_total", "Events dead-lettered, by error class", ["error_class"]
            ),
            retries=Counter(f"layerfill_{stage}_retries_total", "Attempts that failed and were retried", ["where"]),
            batch_seconds=Histogram(
                f"layerfill_{stage}_batch_seconds",
                "Per transaction: from consuming the oldest record it commits to the commit",
            ),
            lag=Gauge(
                f"layerfill_{stage}_consumer_lag",
                "Messages behind the partition end, per assigned partition",
                ["topic", "partition"],
            ),
        )


class InFlight:
    """Keys of events handed to the pool and not committed yet (thread-safe): a second event for the same key
    while the first is in flight is a duplicate. A key is released once its outcome is committed (after the
    stage's own after-commit step, which records it as done), or when uncommitted work is discarded."""

    def __init__(self) -> None:
        self._keys: set[Hashable] = set()
        self._lock = threading.Lock()

    def claim(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._keys.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class Batch:
    """Triage's view of the records in hand: the stage's in-flight keys, the key the current record claimed, and
    the repeats triage answered (counted once per batch: a labelled inc() per event cost as much as decoding)."""

    inflight: InFlight
    claimed: Hashable | None = None
    repeats: Tally[str] = field(default_factory=Tally)
    now: float | None = None  # a stage's clock read once per batch, if it needs one (set by the stage)

    def first(self, key: Hashable) -> bool:
        """True if no event with `key` is in flight; the current record then holds it until it is committed."""
        if not self.inflight.claim(key):
            return False
        self.claimed = key
        return True


@dataclass(frozen=True)
class Failed:
    """What became of an event that failed, for its after-commit step: rescheduled (`retry` set) or
    dead-lettered (`retry` None), and the cause as the records carry it."""

    error: str
    retry: RetryInfo | None


class GaveUp(Exception):
    """`retry_in_process` stopped trying: `cause` is the last error, after `attempts` attempts."""

    def __init__(self, cause: Exception, attempts: int) -> None:
        super().__init__(describe(cause))
        self.cause = cause
        self.attempts = attempts


def retry_after(exc: BaseException) -> float:
    """The pause the other side asked for (429/503 Retry-After), 0 when it named none."""
    return float(getattr(exc, "retry_after", None) or 0.0)


class Stage(ABC, Generic[E]):
    """Subclasses name their `stage` and the `event_type` their input topics carry, and implement `triage` and
    `handle`."""

    stage: str  # "fetcher", "scanner": names logs, dead letters and the transactional loop
    event_type: type[E]  # the typed record of the input topics, validated once, when it is decoded

    def __init__(
        self,
        settings: Settings,
        cfg: StageSettings,
        topics: StageTopics,
        *,
        metrics: StageMetrics,
        log: logging.Logger,
        pool_prefix: str,
        codec: EventCodec | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.cfg = cfg
        self.stage_topics = topics
        self.codec = codec or make_codec(settings)
        self.stage_metrics = metrics
        self.log = log
        self.pool = ThreadPoolExecutor(cfg.max_inflight_images, thread_name_prefix=pool_prefix)
        self.inflight = InFlight()
        self.loop = TransactionalLoop(
            settings.kafka,
            LoopConfig(
                stage=self.stage,
                group_id=cfg.group_id,
                transactional_id=cfg.transactional_id,
                topics=[topics.input, topics.retry],
                retry_topic=topics.retry,
                batch_size=cfg.batch_size,
                max_poll_interval_ms=cfg.max_poll_interval_ms,
                health_port=cfg.health_port,
                commit_interval_s=cfg.commit_interval_s,
                max_pending=cfg.max_pending,
            ),
            self.process,
            metrics=LoopMetrics(batch_seconds=metrics.batch_seconds, lag=metrics.lag),
            logger=log,
            on_discard=self.inflight.clear,
        )

    # -- what a stage is -----------------------------------------------------------------------------
    def pretriage(self, m: Message, batch: Batch) -> Outcome | None:
        """Before decoding: an outcome decided from the record's key and headers alone, or None to decode it."""
        return None

    @abstractmethod
    def triage(self, m: Message, ev: E, batch: Batch) -> Triaged:
        """Cheap decisions in the loop's thread; an exception dead-letters the record at once."""

    @abstractmethod
    def handle(self, m: Message, ev: E) -> Outcome:
        """The work, on the stage's pool."""

    def close(self) -> None:
        """Release what the stage holds, once the loop has stopped and the pool has finished its work."""

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self.loop.stopping

    def run(self) -> None:
        self.loop.run(on_close=self._close)

    def stop(self, *_: Any) -> None:
        """Graceful: the batch in hand finishes and commits; nothing new is started."""
        self.loop.stop()

    def install_signal_handlers(self) -> None:
        self.loop.install_signal_handlers()

    def _close(self) -> None:
        self.pool.shutdown(wait=True)
        self.close()

    # -- one batch -----------------------------------------------------------------------------------
    def process(self, msgs: Sequence[Message]) -> list[Job]:
        """The loop's handler: `msgs` are due, in order; one outcome, or the pool's future of one, per message."""
        batch = Batch(self.inflight)
        jobs: list[Job] = []
        for m in msgs:
            batch.claimed = None
            try:
                early = self.pretriage(m, batch)
                if early is not None:
                    jobs.append(early)
                    continue
                record, value = self.codec.decode(m.value())
                if record != self.event_type.RECORD:
                    raise ValueError(f"expected a {self.event_type.RECORD} record, got {record}")
                ev = self.event_type.from_avro(value)
                triaged = self.triage(m, ev, batch)
            except Exception as exc:
                if batch.claimed is not None:
                    self.inflight.release(batch.claimed)
                jobs.append(self.dead_letter(m, exc, attempts=1))
                continue
            key = batch.claimed
            if triaged is not None:
                jobs.append(triaged if key is None else self._releasing(key, triaged))
            elif key is None:
                jobs.append(self.pool.submit(self.handle, m, ev))
            else:
                jobs.append(self.pool.submit(self._releasing, key, functools.partial(self.handle, m, ev)))
        for label, n in batch.repeats.items():
            self.stage_metrics.events.labels(label).inc(n)
        return jobs

    def _releasing(self, key: Hashable, work: Outcome | Callable[[], Outcome]) -> Outcome:
        """`work`'s outcome, releasing `key` once it is committed (after its own after-commit step)."""
        try:
            out = work if isinstance(work, Outcome) else work()
        except BaseException:
            self.inflight.release(key)
            raise
        if out.quiet:
            # Nothing to record once committed, and a quiet outcome must stay quiet (it costs no transaction).
            self.inflight.release(key)
            return out
        step = out.after_commit

        def after() -> None:
            try:
                if step is not None:
                    step()
            finally:
                self.inflight.release(key)

        return Outcome(records=out.records, label=out.label, after_commit=after)

    # -- attempts ------------------------------------------------------------------------------------
    def retry_in_process(self, attempt: Callable[[int, bool], T], *, extra: dict[str, Any]) -> T:
        """`attempt(n, last)` for n = 1.. up to `attempts_in_process`, pausing in between. Raises GaveUp on a
        permanent error, after the last attempt, when the other side asks for a pause too long to hold a
        worker for (the retry topic waits instead), or when the stage is stopping."""
        attempts = self.cfg.attempts_in_process
        for n in range(1, attempts + 1):
            try:
                return attempt(n, n == attempts)
            except Exception as exc:
                if not is_transient(exc):
                    raise GaveUp(exc, n) from exc
                self.log.warning("attempt failed", extra={**extra, "attempt": n, "error": describe(exc)})
                pause = in_process_pause(n, retry_after(exc))
                if n == attempts or pause is None or self.stopping:
                    raise GaveUp(exc, n) from exc
                self.stage_metrics.retries.labels("in_process").inc()
                time.sleep(pause)
        raise AssertionError("unreachable: attempts_in_process >= 1")

    # -- failures ------------------------------------------------------------------------------------
    def fail(
        self,
        m: Message,
        exc: BaseException,
        *,
        attempts: int,
        records: Sequence[OutRecord] = (),
        after_commit: Callable[[Failed], None] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Outcome:
        """The outcome of an event whose handling failed after `attempts` attempts in this round: its bytes on the
        retry topic while the error is transient and retries are left, else on the dead-letter topic. `records`
        (outputs of the part that succeeded) are committed with it; `after_commit` learns which it was."""
        info = read_retry_headers(m.headers())
        error = describe(exc)
        step = None
        if is_transient(exc):
            step = next_step(info, self.cfg.retry_delays_s, int(time.time() * 1000), not_before_s=retry_after(exc))
        if step is None:
            out = self.dead_letter(m, exc, attempts=info.attempt + attempts, extra=extra)
        else:
            self.stage_metrics.retries.labels("retry_topic").inc()
            self.stage_metrics.events.labels("retried").inc()
            self.log.warning("rescheduled on the retry topic", extra={**(extra or {}), "retry": step.attempt,
                                                                       "error": error})  # fmt: skip
            out = Outcome(records=[retry_record(m, self.stage_topics.retry, step, error)], label="retried")
        after = None
        if after_commit is not None:
            failed = Failed(error, step)

            def after() -> None:
                after_commit(failed)

        return Outcome(records=[*records, *out.records], label=out.label, after_commit=after)

    def dead_letter(
        self, m: Message, exc: BaseException, *, attempts: int, extra: dict[str, Any] | None = None
    ) -> Outcome:
        """`m` unchanged on the dead-letter topic, the cause (class and message) in its headers."""
        self.stage_metrics.dead_letters.labels(type(exc).__name__).inc()
        self.stage_metrics.events.labels("dead_lettered").inc()
        self.log.warning("dead-lettered", extra={**(extra or {}), "error": describe(exc), "attempts": attempts})
        rec = dead_letter_record(
            m, self.stage_topics.dlq, stage=self.stage, consumer_group=self.cfg.group_id,
            error_class=type(exc).__name__, error_message=describe(exc), attempts=attempts,
        )  # fmt: skip
        return Outcome(records=[rec], label="dead_lettered")

    def safe_state(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A state DB write that never fails the event: the state DB mirrors what storage holds and what the
        committed events say, so losing a write costs a later lookup or a rescan, never an image or a result."""
        try:
            fn(*args, **kwargs)
        except Exception:
            self.log.exception("state update failed", extra={"call": getattr(fn, "__name__", str(fn))})

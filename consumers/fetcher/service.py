"""`layerfill run fetcher`: consume ManifestPulled (and due retries), make each image complete, and commit the
output events together with the consumed offsets in one Kafka transaction (exactly-once).

An input offset is committed only with the outcome of its event: the image complete (LayerCached + ImageCached),
rescheduled on the retry topic, or dead-lettered. A crash before the commit means the batch is consumed again;
the sink skips what is already stored, so a redelivery costs lookups, not downloads."""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from layerfill.config.settings import Settings
from layerfill.kafka.deadletter import dlq_headers
from layerfill.kafka.keys import repository_key
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.retry import next_step, read_retry_headers, retry_headers
from layerfill.observability.http import serve_health
from layerfill.serde.codec import EventCodec
from layerfill.sinks.factory import SinkFactory
from layerfill.state.store import StateStore
from layerfill.wiring import make_codec

from . import metrics
from .errors import describe, is_transient
from .fill import FillResult, ImageFiller, Resources

log = logging.getLogger("layerfill.fetcher")

# Offsets of batches that emit nothing (repeat pulls of complete images) are committed at most this often, or
# when the topic runs dry, or with the next batch that emits something. A transaction costs ~10 ms of broker
# round trips, which per 500 repeats was a third of the firehose's time (bench/firehose.py, cProfile). A crash
# before the commit redelivers those repeats, which emit nothing again.
QUIET_COMMIT_INTERVAL_S = 1.0

ImageKey = tuple[str, str, str]


@dataclass
class Outcome:
    records: list[OutRecord] = field(default_factory=list)
    complete: FillResult | None = None
    failed: tuple[ImageKey, str, str] | None = None  # key, event_id, error
    label: str = "complete"


# Shared and never mutated: triage answers most events of a firehose with one of these.
_ALREADY_COMPLETE = Outcome(label="already_complete")
_DUPLICATE_IN_BATCH = Outcome(label="duplicate_in_batch")


class FatalError(RuntimeError):
    pass


class FetcherService:
    def __init__(self, settings: Settings, *, state: StateStore | None = None, codec: EventCodec | None = None) -> None:
        self.settings = settings
        cfg = settings.fetcher
        self.codec = codec or make_codec(settings)
        self.state = state or StateStore(settings.state.database_url)
        self.topics = settings.topics
        self.in_topics = [self.topics.manifest_pulled.name, self.topics.retry.name]
        self.consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": cfg.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": cfg.max_poll_interval_ms,
            }
        )
        self.producer = Producer(
            {
                **settings.kafka.client_config(),
                "transactional.id": f"{cfg.transactional_id_prefix}-{cfg.instance_id}",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "zstd",
                "transaction.timeout.ms": 60000,
            }
        )
        self.blob_pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="blob")
        self.image_pool = ThreadPoolExecutor(cfg.max_inflight_images, thread_name_prefix="image")
        self.sinks = SinkFactory(part_size=cfg.part_bytes)
        self.resources = Resources(settings, lambda route: self.sinks.make(route, settings.s3))
        self.filler = ImageFiller(settings, self.resources, self.blob_pool)
        # Images known complete: repeated pulls of popular images never reach the database.
        self.known_complete: LRUCache[ImageKey, bool] = LRUCache(maxsize=100_000)
        self.paused: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._ready = False
        self._fatal: str | None = None
        self._last_lag = 0.0
        self._quiet_offsets: dict[tuple[str, int], int] = {}
        self._quiet_since = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Graceful: the batch in hand finishes and commits; nothing new is started."""
        self._stop.set()

    def run(self) -> None:
        cfg = self.settings.fetcher
        if cfg.health_port:
            serve_health("0.0.0.0", cfg.health_port, lambda: self._fatal is None, lambda: self._ready)
        self.producer.init_transactions(60)
        self.consumer.subscribe(self.in_topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._ready = True
        log.info("fetcher started", extra={"topics": ",".join(self.in_topics), "group": cfg.group_id})
        try:
            while not self._stop.is_set():
                self._resume_due()
                msgs = self.consumer.consume(num_messages=cfg.batch_size, timeout=0.5)
                if msgs:
                    with metrics.BATCH_SECONDS.time():
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
            self.blob_pool.shutdown(wait=True)
            self.image_pool.shutdown(wait=True)
            self.resources.close()
            log.info("fetcher stopped")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- rebalance and retry pauses ----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned", extra={"partitions": ",".join(f"{p.topic}[{p.partition}]" for p in partitions)})

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
        jobs: list[tuple[Message, dict[str, Any] | None, Outcome | None]] = []
        in_batch: set[ImageKey] = set()
        repeats = {"already_complete": 0, "duplicate_in_batch": 0}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"error": err.str()})
                    if err.fatal():
                        raise FatalError(err.str())
                continue
            tp = (m.topic(), m.partition())
            if tp in held:
                continue
            if m.topic() == self.topics.retry.name:
                due = read_retry_headers(m.headers()).due_ms
                if due > now_ms:
                    # Not due: rewind to it and pause the partition until it is (a delayed queue).
                    part = TopicPartition(m.topic(), m.partition(), m.offset())
                    self.consumer.pause([part])
                    self.consumer.seek(part)
                    self.paused[tp] = due
                    held.add(tp)
                    continue
            offsets[tp] = m.offset() + 1
            ev, pre = self._triage(m, in_batch)
            if pre is not None and pre.label in repeats:
                repeats[pre.label] += 1
            jobs.append((m, ev, pre))
        # Counted once per batch: a labelled inc() per event cost as much as decoding it.
        for label, n in repeats.items():
            if n:
                metrics.EVENTS.labels(label).inc(n)
        futures = [
            (m, pre) if pre is not None else (m, self.image_pool.submit(self._handle, m, ev)) for m, ev, pre in jobs
        ]
        outcomes = [f if isinstance(f, Outcome) else f.result() for _, f in futures]
        self._commit(outcomes, offsets)

    def _triage(self, m: Message, in_batch: set[ImageKey]) -> tuple[dict[str, Any] | None, Outcome | None]:
        """Cheap decisions in the poll thread: undecodable records, repeats, duplicates within the batch."""
        try:
            record, ev = self.codec.decode(m.value())
            if record != "ManifestPulled":
                raise ValueError(f"expected a ManifestPulled record, got {record}")
        except Exception as exc:
            return None, self._dead_letter(m, exc, attempts=1)
        key = (ev["registry"], ev["repository"], ev["digest"])
        if key in self.known_complete:
            return ev, _ALREADY_COMPLETE
        if key in in_batch:
            return ev, _DUPLICATE_IN_BATCH
        in_batch.add(key)
        return ev, None

    def _handle(self, m: Message, ev: dict[str, Any]) -> Outcome:
        key: ImageKey = (ev["registry"], ev["repository"], ev["digest"])
        extra = {"event_id": ev["event_id"], "repository": ev["repository"], "digest": ev["digest"]}
        try:
            if self.state.is_complete(*key):
                self.known_complete[key] = True
                metrics.EVENTS.labels("already_complete").inc()
                return Outcome(label="already_complete")
        except Exception:
            log.exception("state lookup failed; filling anyway", extra=extra)
        info = read_retry_headers(m.headers())
        cfg = self.settings.fetcher
        last: BaseException | None = None
        with metrics.INFLIGHT_IMAGES.track_inprogress():
            for attempt in range(1, cfg.attempts_in_process + 1):
                try:
                    self._safe_state(self.state.mark_filling, *key, event_id=ev["event_id"],
                                     media_type=ev.get("media_type"), reference=ev.get("reference"))  # fmt: skip
                    with metrics.FILL_SECONDS.time():
                        result = self.filler.fill(ev)
                    log.info("image complete", extra={**extra, "fetched_bytes": result.fetched_bytes,
                                                      "items": len(result.items)})  # fmt: skip
                    metrics.EVENTS.labels("complete").inc()
                    return Outcome(records=self._emit(result), complete=result)
                except Exception as exc:
                    last = exc
                    if not is_transient(exc):
                        log.warning("permanent failure", extra={**extra, "error": describe(exc)})
                        return self._dead_letter(m, exc, attempts=info.attempt + attempt, event=ev)
                    metrics.RETRIES.labels("in_process").inc()
                    log.warning("attempt failed", extra={**extra, "attempt": attempt, "error": describe(exc)})
                    if attempt < cfg.attempts_in_process and not self._stop.is_set():
                        time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
        assert last is not None
        step = next_step(info, cfg.retry_delays_s, int(time.time() * 1000))
        if step is None:
            return self._dead_letter(m, last, attempts=info.attempt + cfg.attempts_in_process, event=ev)
        metrics.RETRIES.labels("retry_topic").inc()
        metrics.EVENTS.labels("retried").inc()
        log.warning("rescheduled on the retry topic", extra={**extra, "retry": step.attempt, "error": describe(last)})
        rec = OutRecord(self.topics.retry.name, m.key(), m.value(), retry_headers(step, describe(last), m.headers()))
        self._safe_state(self.state.mark_failed, *key, error=f"retrying: {describe(last)}", event_id=ev["event_id"])
        return Outcome(records=[rec], label="retried")

    def _dead_letter(
        self, m: Message, exc: BaseException, *, attempts: int, event: dict[str, Any] | None = None
    ) -> Outcome:
        metrics.DEAD_LETTERS.labels(type(exc).__name__).inc()
        metrics.EVENTS.labels("dead_lettered").inc()
        headers = dlq_headers(
            stage="fetcher", error_class=type(exc).__name__, error_message=describe(exc),
            original_topic=m.topic(), original_partition=m.partition(), original_offset=m.offset(),
            consumer_group=self.settings.fetcher.group_id, attempts=attempts,
        )  # fmt: skip
        # Headers of the original (e.g. the retry count) stay, so a replayed dead letter keeps its history.
        carried = [(k, v or b"") for k, v in (m.headers() or []) if not k.startswith("layerfill.dlq.")]
        out = Outcome(records=[OutRecord(self.topics.dlq.name, m.key(), m.value() or b"", [*carried, *headers])],
                      label="dead_lettered")  # fmt: skip
        if event is not None:
            key = (event["registry"], event["repository"], event["digest"])
            out.failed = (key, event["event_id"], describe(exc))
        return out

    def _emit(self, result: FillResult) -> list[OutRecord]:
        ev = result.event
        key = repository_key(ev["registry"], ev["repository"])
        lc, ic = self.topics.layer_cached.name, self.topics.image_cached.name
        hdr = [("layerfill.caused_by", ev["event_id"].encode())]
        recs = [OutRecord(lc, key, self.codec.encode("LayerCached", v, lc), hdr) for v in result.layer_cached()]
        recs.append(OutRecord(ic, key, self.codec.encode("ImageCached", result.image_cached(), ic), hdr))
        return recs

    # -- the transaction ---------------------------------------------------------------------------
    def _commit(self, outcomes: list[Outcome], offsets: dict[tuple[str, int], int]) -> None:
        """Outputs and offsets in one transaction; a batch that emits nothing may wait for a later one."""
        quiet = all(not o.records and o.complete is None and o.failed is None for o in outcomes)
        if quiet and offsets:
            if not self._quiet_offsets:
                self._quiet_since = time.monotonic()
            self._quiet_offsets.update(offsets)
            if time.monotonic() - self._quiet_since < QUIET_COMMIT_INTERVAL_S:
                return
        offsets = {**self._quiet_offsets, **offsets}
        self._quiet_offsets = {}
        if not offsets:
            return
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
                    f"Kafka transaction error: {err.str()} (another fetcher with instance_id "
                    f"{self.settings.fetcher.instance_id!r} may have fenced this one)"
                ) from exc
            log.warning("transaction aborted; the batch will be consumed again", extra={"error": err.str()})
            try:
                self.producer.abort_transaction(60)
            except KafkaException:
                log.exception("abort failed")
            self._rewind()
            return
        # Only now, with outputs and offsets committed, does the state say so.
        for out in outcomes:
            if out.complete is not None:
                r = out.complete
                key = (r.event["registry"], r.event["repository"], r.event["digest"])
                self._safe_state(self.state.mark_complete, *key, total_bytes=r.plan.total_bytes,
                                 fetched_bytes=r.fetched_bytes, blobs=r.blob_records(), event_id=r.event["event_id"])  # fmt: skip
                self.known_complete[key] = True
            elif out.failed is not None:
                key, event_id, error = out.failed
                self._safe_state(self.state.mark_failed, *key, error=error, event_id=event_id)

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
        for tp in self.consumer.committed(assignment, timeout=30):
            self.consumer.seek(
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            )

    def _safe_state(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        # The state DB is a cache of what storage holds: losing a write costs a later lookup, not an image.
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("state update failed", extra={"call": getattr(fn, "__name__", str(fn))})

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 15:
            return
        self._last_lag = now
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                if tp.offset >= 0 and high >= 0:
                    metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
        except KafkaException:
            pass

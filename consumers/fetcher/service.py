"""`layerfill run fetcher`: consume ManifestPulled (and due retries), make each image complete, and commit the
output events together with the consumed offsets in one Kafka transaction (exactly-once; the loop, the retry
topic's delayed queue and the transaction are layerfill.kafka.txloop, shared with the scanner).

An input offset is committed only with the outcome of its event: the image complete (LayerCached + ImageCached),
rescheduled on the retry topic, or dead-lettered. A crash before the commit means the batch is consumed again;
the sink skips what is already stored, so a redelivery costs lookups, not downloads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cachetools import LRUCache
from confluent_kafka import Message

from layerfill.config.settings import Settings
from layerfill.kafka.failures import dead_letter_record, retry_record
from layerfill.kafka.keys import repository_key
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.retry import next_step, read_retry_headers
from layerfill.kafka.txloop import LoopConfig, LoopMetrics, Outcome, TransactionalLoop
from layerfill.serde.codec import EventCodec
from layerfill.sinks.factory import SinkFactory
from layerfill.state.store import StateStore
from layerfill.wiring import make_codec

from . import metrics
from .errors import describe, is_transient
from .fill import FillResult, ImageFiller, Resources
from .leases import BlobLeases
from .referrers import ReferrerChecker

log = logging.getLogger("layerfill.fetcher")

ImageKey = tuple[str, str, str]


# Shared and never mutated: triage answers most events of a firehose with one of these.
_ALREADY_COMPLETE = Outcome(label="already_complete")
_DUPLICATE_IN_BATCH = Outcome(label="duplicate_in_batch")


MAX_IN_PROCESS_PAUSE_S = 5.0  # longer pauses hand the event to the retry topic rather than hold a worker


def _retry_after(exc: BaseException) -> float:
    """The pause an upstream asked for (429/503 Retry-After), 0 when it named none."""
    return float(getattr(exc, "retry_after", None) or 0.0)


def _reason(event: dict[str, Any], retry_attempt: int, attempt: int) -> str:
    """Why the upstream is asked (the metrics' `reason`): a backfill or `verify --repair` event (source
    `backfill`), a repair (a retried fill completing what a failed attempt left), or a fill after a client's pull."""
    if event.get("source") == "backfill":
        return "backfill"
    return "repair" if retry_attempt > 0 or attempt > 1 else "fill"


class FetcherService:
    def __init__(self, settings: Settings, *, state: StateStore | None = None, codec: EventCodec | None = None) -> None:
        self.settings = settings
        cfg = settings.fetcher
        self.codec = codec or make_codec(settings)
        self.state = state or StateStore(settings.state.database_url)
        self.topics = settings.topics
        self.in_topics = [self.topics.manifest_pulled.name, self.topics.retry.name]
        self.blob_pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="blob")
        self.image_pool = ThreadPoolExecutor(cfg.max_inflight_images, thread_name_prefix="image")
        self.sinks = SinkFactory(part_size=cfg.part_bytes)
        self.resources = Resources(settings, lambda route: self.sinks.make(route, settings.s3))
        self.referrers = ReferrerChecker(self.state)
        self.leases = BlobLeases(self.state, cfg.instance_id)
        self.filler = ImageFiller(
            settings, self.resources, self.blob_pool, self.leases, lambda: self.loop.stopping, self.referrers
        )
        # Images known complete: repeated pulls of popular images never reach the database.
        self.known_complete: LRUCache[ImageKey, bool] = LRUCache(maxsize=100_000)
        self.loop = TransactionalLoop(
            settings.kafka,
            LoopConfig(
                stage="fetcher",
                group_id=cfg.group_id,
                transactional_id=f"{cfg.transactional_id_prefix}-{cfg.instance_id}",
                topics=self.in_topics,
                retry_topic=self.topics.retry.name,
                batch_size=cfg.batch_size,
                max_poll_interval_ms=cfg.max_poll_interval_ms,
                health_port=cfg.health_port,
            ),
            self.process,
            metrics=LoopMetrics(batch_seconds=metrics.BATCH_SECONDS, lag=metrics.LAG),
            logger=log,
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Graceful: the batch in hand finishes and commits; nothing new is started."""
        self.loop.stop()

    def run(self) -> None:
        self.loop.run(on_close=self._close)

    def install_signal_handlers(self) -> None:
        self.loop.install_signal_handlers()

    def _close(self) -> None:
        self.blob_pool.shutdown(wait=True)
        self.image_pool.shutdown(wait=True)
        self.leases.close()
        self.resources.close()

    # -- one batch ---------------------------------------------------------------------------------
    def process(self, msgs: list[Message]) -> list[Outcome]:
        """The loop's batch handler: `msgs` are due, in order; one Outcome per message."""
        jobs: list[tuple[Message, dict[str, Any] | None, Outcome | None]] = []
        in_batch: set[ImageKey] = set()
        repeats = {"already_complete": 0, "duplicate_in_batch": 0}
        for m in msgs:
            ev, pre = self._triage(m, in_batch)
            if pre is not None and pre.label in repeats:
                repeats[pre.label] += 1
            jobs.append((m, ev, pre))
        # Counted once per batch: a labelled inc() per event cost as much as decoding it.
        for label, n in repeats.items():
            if n:
                metrics.EVENTS.labels(label).inc(n)
        futures = [self._start(m, ev, pre) for m, ev, pre in jobs]
        return [f if isinstance(f, Outcome) else f.result() for f in futures]

    def _start(self, m: Message, ev: dict[str, Any] | None, pre: Outcome | None) -> Outcome | Future[Outcome]:
        if pre is None:
            return self.image_pool.submit(self._handle, m, ev)
        # A pull of a complete image looks for new signatures/SBOMs upstream, at most once per interval.
        if pre is _ALREADY_COMPLETE and ev is not None and self.referrers.due(self.settings.routes, ev):
            return self.image_pool.submit(self._recheck_referrers, ev, pre)
        return pre

    def _triage(self, m: Message, in_batch: set[ImageKey]) -> tuple[dict[str, Any] | None, Outcome | None]:
        """Cheap decisions in the poll thread: undecodable records, repeats, duplicates within the batch."""
        try:
            record, ev = self.codec.decode(m.value())
            if record != "ManifestPulled":
                raise ValueError(f"expected a ManifestPulled record, got {record}")
        except Exception as exc:
            return None, self._dead_letter(m, exc, attempts=1)
        key = (ev["registry"], ev["repository"], ev["digest"])
        # Backfill and `verify --repair` events exist because storage may disagree with what this process or the
        # state DB believes: they always go to the filler, which checks every blob in storage.
        if key in self.known_complete and ev.get("source") != "backfill":
            # The key matched one validated before, and nothing else of the event is used: the firehose skips
            # validation (it cost as much as the decode).
            return ev, _ALREADY_COMPLETE
        try:
            self.filler.validate(ev)  # before the state DB or a log line sees its fields
        except Exception as exc:
            return None, self._dead_letter(m, exc, attempts=1)
        if key in in_batch:
            return ev, _DUPLICATE_IN_BATCH
        in_batch.add(key)
        return ev, None

    def _handle(self, m: Message, ev: dict[str, Any]) -> Outcome:
        key: ImageKey = (ev["registry"], ev["repository"], ev["digest"])
        extra = {"event_id": ev["event_id"], "repository": ev["repository"], "digest": ev["digest"]}
        try:
            if ev.get("source") != "backfill" and self.state.is_complete(*key):
                self.known_complete[key] = True
                metrics.EVENTS.labels("already_complete").inc()
                if self.referrers.due(self.settings.routes, ev):
                    return self._recheck_referrers(ev, Outcome(label="already_complete"))
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
                        result = self.filler.fill(ev, _reason(ev, info.attempt, attempt))
                    log.info("image complete", extra={**extra, "fetched_bytes": result.fetched_bytes,
                                                      "items": len(result.items)})  # fmt: skip
                    metrics.EVENTS.labels("complete").inc()
                    return Outcome(records=self._emit(result), label="complete", after_commit=self._completed(result))
                except Exception as exc:
                    last = exc
                    if not is_transient(exc):
                        log.warning("permanent failure", extra={**extra, "error": describe(exc)})
                        return self._dead_letter(m, exc, attempts=info.attempt + attempt, event=ev)
                    log.warning("attempt failed", extra={**extra, "attempt": attempt, "error": describe(exc)})
                    # The upstream's Retry-After is a floor; a pause too long to hold this thread for waits on
                    # the retry topic instead.
                    pause = max(min(0.5 * 2 ** (attempt - 1), MAX_IN_PROCESS_PAUSE_S), _retry_after(exc))
                    if pause > MAX_IN_PROCESS_PAUSE_S:
                        break
                    if attempt < cfg.attempts_in_process and not self.loop.stopping:
                        metrics.RETRIES.labels("in_process").inc()
                        time.sleep(pause)
        assert last is not None
        step = next_step(info, cfg.retry_delays_s, int(time.time() * 1000), not_before_s=_retry_after(last))
        if step is None:
            return self._dead_letter(m, last, attempts=info.attempt + cfg.attempts_in_process, event=ev)
        metrics.RETRIES.labels("retry_topic").inc()
        metrics.EVENTS.labels("retried").inc()
        log.warning("rescheduled on the retry topic", extra={**extra, "retry": step.attempt, "error": describe(last)})
        rec = retry_record(m, self.topics.retry.name, step, describe(last))
        self._safe_state(self.state.mark_failed, *key, error=f"retrying: {describe(last)}", event_id=ev["event_id"])
        return Outcome(records=[rec], label="retried")

    def _recheck_referrers(self, ev: dict[str, Any], outcome: Outcome) -> Outcome:
        """A pull of a complete image: look for artifacts added upstream since the last check (best effort)."""
        try:
            route = self.filler.route_for(ev)
            self.referrers.recheck(route, self.resources.client(route), self.resources.sink(route), ev,
                                   route.upstream_repository(ev["repository"]))  # fmt: skip
        except Exception:
            log.exception("artifact recheck failed", extra={"repository": ev.get("repository")})
        return outcome

    def _dead_letter(
        self, m: Message, exc: BaseException, *, attempts: int, event: dict[str, Any] | None = None
    ) -> Outcome:
        metrics.DEAD_LETTERS.labels(type(exc).__name__).inc()
        metrics.EVENTS.labels("dead_lettered").inc()
        rec = dead_letter_record(
            m, self.topics.dlq.name, stage="fetcher", consumer_group=self.settings.fetcher.group_id,
            error_class=type(exc).__name__, error_message=describe(exc), attempts=attempts,
        )  # fmt: skip
        after = None
        if event is not None:
            key = (event["registry"], event["repository"], event["digest"])
            error, event_id = describe(exc), event["event_id"]

            def after() -> None:
                self._safe_state(self.state.mark_failed, *key, error=error, event_id=event_id)

        return Outcome(records=[rec], label="dead_lettered", after_commit=after)

    def _completed(self, r: FillResult) -> Callable[[], None]:
        """Once the image's events are committed, the state DB says it is complete."""

        def after() -> None:
            key = (r.event["registry"], r.event["repository"], r.event["digest"])
            self._safe_state(self.state.mark_complete, *key, total_bytes=r.plan.total_bytes,
                             fetched_bytes=r.fetched_bytes, blobs=r.blob_records(), event_id=r.event["event_id"])  # fmt: skip
            self.known_complete[key] = True

        return after

    def _emit(self, result: FillResult) -> list[OutRecord]:
        ev = result.event
        key = repository_key(ev["registry"], ev["repository"])
        lc, ic = self.topics.layer_cached.name, self.topics.image_cached.name
        hdr = [("layerfill.caused_by", ev["event_id"].encode())]
        recs = [OutRecord(lc, key, self.codec.encode("LayerCached", v, lc), hdr) for v in result.layer_cached()]
        recs.append(OutRecord(ic, key, self.codec.encode("ImageCached", result.image_cached(), ic), hdr))
        return recs

    def _safe_state(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        # The state DB is a cache of what storage holds: losing a write costs a later lookup, not an image.
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("state update failed", extra={"call": getattr(fn, "__name__", str(fn))})

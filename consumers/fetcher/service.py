"""`layerfill run fetcher`: consume ManifestPulled (and due retries), make each image complete, and commit the
output events together with the consumed offsets in one Kafka transaction (exactly-once; the stage around it,
the retry topic and dead-lettering are layerfill.kafka.stage, shared with the scanner).

An input offset is committed only with the outcome of its event: the image complete (LayerCached + ImageCached),
rescheduled on the retry topic, or dead-lettered. A crash before the commit means the batch is consumed again;
the sink skips what is already stored, so a redelivery costs lookups, not downloads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Message

from layerfill.config.settings import Settings
from layerfill.kafka.keys import image_fingerprint, image_from_headers, image_key, repository_key
from layerfill.kafka.known import KnownSet
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.retry import read_retry_headers
from layerfill.kafka.stage import Batch, Failed, GaveUp, Stage, StageTopics, Triaged
from layerfill.kafka.txloop import Outcome
from layerfill.serde.codec import EventCodec
from layerfill.serde.records import ManifestPulled
from layerfill.sinks.factory import SinkFactory
from layerfill.state.store import StateStore

from . import metrics
from .fill import FillResult, ImageFiller, Resources
from .leases import BlobLeases
from .referrers import ReferrerChecker

log = logging.getLogger("layerfill.fetcher")

ImageKey = tuple[str, str, str]


# Shared and never mutated: triage answers most events of a firehose with one of these.
_ALREADY_COMPLETE = Outcome(label="already_complete")
_DUPLICATE_IN_BATCH = Outcome(label="duplicate_in_batch")


def _key(ev: ManifestPulled) -> ImageKey:
    return (ev.registry, ev.repository, ev.digest)


def _image(ev: ManifestPulled) -> bytes:
    """The image's key in the per-image maps (known complete, artifact-check claims)."""
    return image_fingerprint(image_key(ev.registry, ev.repository, ev.digest))


def _reason(event: ManifestPulled, retry_attempt: int, attempt: int) -> str:
    """Why the upstream is asked (the metrics' `reason`): a backfill or `verify --repair` event (source
    `backfill`), a repair (a retried fill completing what a failed attempt left), or a fill after a client's pull."""
    if event.source == "backfill":
        return "backfill"
    return "repair" if retry_attempt > 0 or attempt > 1 else "fill"


class FetcherService(Stage[ManifestPulled]):
    stage = "fetcher"
    event_type = ManifestPulled

    def __init__(self, settings: Settings, *, state: StateStore | None = None, codec: EventCodec | None = None) -> None:
        t = settings.topics
        super().__init__(settings, settings.fetcher, StageTopics(t.manifest_pulled.name, t.retry.name, t.dlq.name),
                         metrics=metrics.STAGE, log=log, pool_prefix="image", codec=codec)  # fmt: skip
        cfg = settings.fetcher
        self.state = state or StateStore(settings.state.database_url)
        self.blob_pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="blob")
        # One S3 connection per thread that may use the sink at once (blob workers and image threads): a smaller
        # pool opens and drops a connection per request beyond it (a soak profile: 17% of blob-worker time).
        self.sinks = SinkFactory(part_size=cfg.part_bytes, buffer_bytes=cfg.buffer_bytes,
                                 max_connections=cfg.workers + cfg.max_inflight_images)  # fmt: skip
        self.resources = Resources(settings, lambda route: self.sinks.make(route, settings.s3))
        self.referrers = ReferrerChecker(self.state, maxsize=cfg.known_images)
        self.leases = BlobLeases(self.state, cfg.instance_id)
        self.filler = ImageFiller(
            settings, self.resources, self.blob_pool, self.leases, lambda: self.loop.stopping, self.referrers
        )
        # Images known complete (by layerfill.kafka.keys.image_fingerprint): repeated pulls of popular images never
        # reach the database. Each carries until when (on the artifact checker's clock) its repeats need no decoding at
        # all when their records carry the digest header: its next artifact recheck, 0.0 until triage has asked.
        # One map, not two, in a table sized from the setting at start-up: the soak showed the per-image state is what
        # a fetcher's memory grew with.
        self.known_complete = KnownSet(maxsize=cfg.known_images, fingerprints=True)

    @property
    def image_pool(self) -> ThreadPoolExecutor:
        return self.pool

    def run(self) -> None:
        self.warm_up()
        super().run()

    def warm_up(self) -> int:
        """Know the most recently completed images before the first event: a new process otherwise sent the first
        pull of each to the state DB on the pool, and its partition's records queued behind that lookup (a
        firehose stalled there). Best effort: without it each image is looked up once, as before."""
        try:
            found = self.state.recently_complete(self.known_complete.maxsize)
        except Exception:
            log.exception("listing the images known complete failed; each is looked up on its first event")
            return 0
        for registry, repository, digest in reversed(found):  # the newest last: the LRU keeps them longest
            self.known_complete[image_fingerprint(image_key(registry, repository, digest))] = 0.0
        log.info("images known complete", extra={"images": len(found)})
        return len(found)

    def close(self) -> None:
        self.blob_pool.shutdown(wait=True)
        self.leases.close()
        self.resources.close()

    # -- the stage -----------------------------------------------------------------------------------
    def pretriage(self, m: Message, batch: Batch) -> Outcome | None:
        """A repeat pull of an image known complete and not due an artifact recheck, told by the record's key and
        headers without decoding it. A record without the headers, a backfill, an image not seen decoded yet or
        one due a recheck is decoded (triage then decides)."""
        found = image_from_headers(m.key(), m.headers())
        if found is None:
            return None
        image, source = found
        until = self.known_complete.get(image_fingerprint(image))
        if until is None or source == b"backfill":
            return None
        now = batch.now
        if now is None:
            now = batch.now = self.referrers.clock()
        if now >= until:
            return None
        batch.repeats["already_complete"] += 1
        return _ALREADY_COMPLETE

    def triage(self, m: Message, ev: ManifestPulled, batch: Batch) -> Triaged:
        """Repeats of complete images and events for an image already in flight; invalid events raise
        (dead-lettered)."""
        # Backfill and `verify --repair` events exist because storage may disagree with what this process or the
        # state DB believes: they always go to the filler, which checks every blob in storage.
        image = _image(ev)
        if ev.source != "backfill" and image in self.known_complete:
            # The key matched one validated before, and nothing else of the event is used: the firehose skips
            # validation (it cost as much as the decode).
            batch.repeats["already_complete"] += 1
            done = self._already_complete(ev)
            self.known_complete[image] = self.referrers.next_due(image)
            return done
        self.filler.validate(ev)  # before the state DB or a log line sees its fields
        if not batch.first(_key(ev)):
            # Another event for this image is being handled: its outcome covers this one.
            batch.repeats["duplicate_in_batch"] += 1
            return _DUPLICATE_IN_BATCH
        return None

    def _already_complete(self, ev: ManifestPulled) -> Outcome:
        """A pull of a complete image: nothing to emit. It looks for new signatures/SBOMs upstream, at most once per
        interval, on the pool and without holding the event's offset back: the recheck is best effort and emits
        nothing (its partition's repeats queued behind it while it ran, a firehose profile showed)."""
        if self.referrers.due(self.settings.routes, ev):
            self.pool.submit(self._recheck_referrers, ev)
        return _ALREADY_COMPLETE

    def handle(self, m: Message, ev: ManifestPulled) -> Outcome:
        key = _key(ev)
        extra = {"event_id": ev.event_id, "repository": ev.repository, "digest": ev.digest}
        try:
            if ev.source != "backfill" and self.state.is_complete(*key):
                self.known_complete[_image(ev)] = 0.0
                metrics.EVENTS.labels("already_complete").inc()
                return self._already_complete(ev)
        except Exception:
            log.exception("state lookup failed; filling anyway", extra=extra)
        retry_attempt = read_retry_headers(m.headers()).attempt

        def attempt(n: int, last: bool) -> FillResult:
            self.safe_state(self.state.mark_filling, *key, event_id=ev.event_id, media_type=ev.media_type,
                            reference=ev.reference)  # fmt: skip
            with metrics.FILL_SECONDS.time():
                return self.filler.fill(ev, _reason(ev, retry_attempt, n))

        with metrics.INFLIGHT_IMAGES.track_inprogress():
            try:
                result = self.retry_in_process(attempt, extra=extra)
            except GaveUp as gave_up:
                return self.fail(m, gave_up.cause, attempts=gave_up.attempts, extra=extra,
                                 after_commit=lambda failed: self._failed(ev, failed))  # fmt: skip
        log.info("image complete", extra={**extra, "fetched_bytes": result.fetched_bytes, "items": len(result.items)})
        metrics.EVENTS.labels("complete").inc()
        return Outcome(records=self._emit(result), label="complete", after_commit=self._completed(result))

    def _recheck_referrers(self, ev: ManifestPulled) -> None:
        """A pull of a complete image: look for artifacts added upstream since the last check (best effort)."""
        try:
            route = self.filler.route_for(ev)
            self.referrers.recheck(route, self.resources.client(route), self.resources.sink(route), ev,
                                   route.upstream_repository(ev.repository))  # fmt: skip
        except Exception:
            log.exception("artifact recheck failed", extra={"repository": ev.repository})

    # -- after the commit ----------------------------------------------------------------------------
    def _failed(self, ev: ManifestPulled, failed: Failed) -> None:
        """Once the retry or the dead letter is committed, the state DB says the image failed, and why."""
        error = f"retrying: {failed.error}" if failed.retry is not None else failed.error
        self.safe_state(self.state.mark_failed, *_key(ev), error=error, event_id=ev.event_id)

    def _completed(self, r: FillResult) -> Callable[[], None]:
        """Once the image's events are committed, the state DB says it is complete."""

        ev = r.event

        def after() -> None:
            key = _key(ev)
            self.safe_state(self.state.mark_complete, *key, total_bytes=r.plan.total_bytes,
                            fetched_bytes=r.fetched_bytes, blobs=r.blob_records(), event_id=ev.event_id)  # fmt: skip
            self.known_complete[_image(ev)] = 0.0

        return after

    def _emit(self, result: FillResult) -> list[OutRecord]:
        ev = result.event
        key = repository_key(ev.registry, ev.repository)
        lc, ic = self.topics.layer_cached.name, self.topics.image_cached.name
        hdr = [("layerfill.caused_by", ev.event_id.encode())]
        recs = [
            OutRecord(lc, key, self.codec.encode("LayerCached", v.to_avro(), lc), hdr) for v in result.layer_cached()
        ]
        recs.append(OutRecord(ic, key, self.codec.encode("ImageCached", result.image_cached().to_avro(), ic), hdr))
        return recs

"""`layerfill run scanner`: consume ImageCached (and due retries), have Clair index every image manifest in it,
and commit ImageScanned together with the consumed offsets in one Kafka transaction (the shared loop).

Idempotent per manifest digest: a manifest whose scan is recorded as indexed or unsupported is not scanned
again unless `scanner.rescan` is set (an index_error is). Clair being down never loses a scan: the event is
retried in process, then through the scanner's retry topic, then dead-lettered with its bytes unchanged.
The state DB records a scan only once its ImageScanned is committed."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Message

from layerfill.config.routes import Route
from layerfill.config.settings import Settings
from layerfill.kafka.classify import describe
from layerfill.kafka.keys import repository_key
from layerfill.kafka.known import KnownSet
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.stage import Batch, Failed, GaveUp, Stage, StageTopics, Triaged
from layerfill.kafka.txloop import Outcome
from layerfill.serde.codec import EventCodec
from layerfill.serde.records import CachedManifest, ImageCached
from layerfill.state.records import ScanState
from layerfill.state.store import StateStore

from . import metrics
from .clair import ClairClient
from .errors import IndexFailed
from .layers import LayerLocator
from .scan import SCANNER, ManifestScanner, ScanResult

log = logging.getLogger("layerfill.scanner")

ScanKey = tuple[str, str]  # registry, manifest digest
DONE_STATES = frozenset({ScanState.INDEXED, ScanState.UNSUPPORTED})
_DUPLICATE_IN_BATCH = Outcome(label="duplicate_in_batch")


class ScannerService(Stage[ImageCached]):
    stage = "scanner"
    event_type = ImageCached

    def __init__(
        self,
        settings: Settings,
        *,
        state: StateStore | None = None,
        codec: EventCodec | None = None,
        clair: ClairClient | None = None,
    ) -> None:
        t = settings.topics
        super().__init__(settings, settings.scanner, StageTopics(t.image_cached.name, t.image_cached_retry.name, t.dlq.name),
                         metrics=metrics.STAGE, log=log, pool_prefix="scan", codec=codec)  # fmt: skip
        cfg = settings.scanner
        self.cfg = cfg  # the scanner's own settings (the base class types it as StageSettings)
        self.state = state or StateStore(settings.state.database_url)
        self.clair = clair or ClairClient(
            cfg.clair_url,
            deadline_s=cfg.poll_deadline_s,
            poll_interval_s=cfg.poll_interval_s,
            poll_max_interval_s=cfg.poll_max_interval_s,
            request_timeout_s=cfg.request_timeout_s,
        )
        self.locator = LayerLocator(settings)
        self.scanner = ManifestScanner(self.clair, self.locator)
        # Manifests known scanned: repeated ImageCached events of popular images never reach the database.
        self.known_done = KnownSet(maxsize=100_000)

    def close(self) -> None:
        self.clair.close()

    # -- the stage -----------------------------------------------------------------------------------
    def triage(self, m: Message, ev: ImageCached, batch: Batch) -> Triaged:
        """Redelivered duplicates within the batch."""
        if not batch.first(ev.event_id):
            batch.repeats["duplicate_in_batch"] += 1
            return _DUPLICATE_IN_BATCH
        return None

    def handle(self, m: Message, ev: ImageCached) -> Outcome:
        try:
            route = self.locator.route(ev.registry, ev.repository)
        except Exception as exc:
            return self.fail(m, exc, attempts=1)
        records: list[OutRecord] = []
        done: list[ScanResult] = []
        reported_before: set[str] = set()  # digests that had a final report before this scan (rescans)
        failure: tuple[str, GaveUp] | None = None
        with metrics.INFLIGHT_SCANS.track_inprogress():
            for manifest in ev.manifests:
                if self._already_scanned(ev.registry, manifest.digest):
                    continue
                if self._mark_pending(ev.registry, ev.repository, manifest.digest):
                    reported_before.add(manifest.digest)
                try:
                    result = self._scan(route, ev, manifest)
                except GaveUp as gave_up:
                    failure = (manifest.digest, gave_up)
                    break
                records.append(self._scanned_record(ev, result))
                done.append(result)
        # None when nothing was scanned: the loop may then batch this offset's commit with later ones.
        recorded = self._recorder(ev, done, reported_before) if done else None
        if failure is None:
            label = "scanned" if done else "already_scanned"
            metrics.EVENTS.labels(label).inc()
            return Outcome(records=records, label=label, after_commit=recorded)
        # Manifests scanned before the failure keep their results; the event comes back for the rest.
        digest, gave_up = failure

        def after(failed: Failed) -> None:
            if recorded is not None:
                recorded()
            if failed.retry is not None:
                self.safe_state(self.state.record_scan, ev.registry, ev.repository, digest, scanner=SCANNER,
                                state=ScanState.PENDING, error=f"retry {failed.retry.attempt} queued: {failed.error}")  # fmt: skip

        extra = {"event_id": ev.event_id, "digest": digest}
        return self.fail(m, gave_up.cause, attempts=gave_up.attempts, records=records, after_commit=after, extra=extra)

    # -- one manifest ------------------------------------------------------------------------------
    def _already_scanned(self, registry: str, digest: str) -> bool:
        if self.cfg.rescan:
            return False
        key = (registry, digest)
        if key in self.known_done:
            return True
        try:
            row = self.state.scan_for(registry, digest)
        except Exception:
            log.exception("state lookup failed; scanning anyway", extra={"digest": digest})
            return False
        if row is not None and row.state in DONE_STATES:
            self.known_done.add(key)
            return True
        return False

    def _scan(self, route: Route, ev: ImageCached, manifest: CachedManifest) -> ScanResult:
        """Attempts in process: Clair unavailable -> GaveUp after the last; IndexError -> final index_error."""
        repository, digest = ev.repository, manifest.digest
        extra = {"event_id": ev.event_id, "repository": repository, "digest": digest}

        def attempt(n: int, last: bool) -> ScanResult:
            try:
                with metrics.SCAN_SECONDS.time():
                    result = self.scanner.scan(route, repository, manifest)
            except IndexFailed as exc:
                log.warning("Clair reported IndexError", extra={**extra, "attempt": n, "error": str(exc)})
                if last:
                    return self.scanner.index_error(digest, describe(exc))
                raise
            log.info("scanned", extra={**extra, "state": result.state.value, "packages": result.packages,
                                       "vulnerabilities": ",".join(result.vulnerability_names),
                                       "error": result.error})  # fmt: skip
            return result

        return self.retry_in_process(attempt, extra=extra)

    def _mark_pending(self, registry: str, repository: str, digest: str) -> bool:
        """Start a scan attempt in the state DB; True when the manifest already had a final report (a rescan)."""
        try:
            row = self.state.scan_for(registry, digest)
        except Exception:
            log.exception("state lookup failed", extra={"digest": digest})
            return False
        # A retried event finds its row pending already: that attempt was counted when the retry was queued.
        if row is None or row.state is not ScanState.PENDING:
            self.safe_state(
                self.state.record_scan, registry, repository, digest, scanner=SCANNER, state=ScanState.PENDING
            )
        return row is not None and row.state in DONE_STATES

    def _scanned_record(self, ev: ImageCached, result: ScanResult) -> OutRecord:
        topic = self.topics.image_scanned.name
        value = self.codec.encode("ImageScanned", result.event(ev).to_avro(), topic)
        headers = [("layerfill.caused_by", ev.event_id.encode())]
        return OutRecord(topic, repository_key(ev.registry, ev.repository), value, headers)

    def _recorder(
        self, ev: ImageCached, results: list[ScanResult], reported_before: frozenset[str] | set[str] = frozenset()
    ) -> Callable[[], None]:
        def record() -> None:
            for r in results:
                self.safe_state(self.state.record_scan, ev.registry, ev.repository, r.digest, scanner=SCANNER,
                                state=r.state, scanner_version=r.scanner_version, package_count=r.packages,
                                vulnerabilities=r.vulnerabilities, report_uri=r.report_uri, error=r.error)  # fmt: skip
                metrics.SCANS.labels(r.state.value).inc()
                if r.digest not in reported_before and r.state in DONE_STATES:
                    for severity, count in (r.vulnerabilities or {}).items():
                        if count:
                            metrics.NEW_VULNERABILITIES.labels(severity).inc(count)
                if r.state in DONE_STATES:
                    self.known_done.add((ev.registry, r.digest))

        return record

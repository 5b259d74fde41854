"""`layerfill run scanner`: consume ImageCached (and due retries), have Clair index every image manifest in it,
and commit ImageScanned together with the consumed offsets in one Kafka transaction (the shared loop).

Idempotent per manifest digest: a manifest whose scan is recorded as indexed or unsupported is not scanned
again unless `scanner.rescan` is set (an index_error is). Clair being down never loses a scan: the event is
retried in process, then through the scanner's retry topic, then dead-lettered with its bytes unchanged.
The state DB records a scan only once its ImageScanned is committed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cachetools import LRUCache
from confluent_kafka import Message

from layerfill.config.routes import Route
from layerfill.config.settings import Settings
from layerfill.kafka.failures import dead_letter_record, retry_record
from layerfill.kafka.keys import repository_key
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.retry import RetryInfo, next_step, read_retry_headers
from layerfill.kafka.txloop import LoopConfig, LoopMetrics, Outcome, TransactionalLoop
from layerfill.serde.codec import EventCodec
from layerfill.state.records import ScanState
from layerfill.state.store import StateStore
from layerfill.wiring import make_codec

from . import metrics
from .clair import ClairClient
from .errors import IndexFailed, describe, is_transient
from .layers import LayerLocator
from .scan import SCANNER, ManifestScanner, ScanResult

log = logging.getLogger("layerfill.scanner")

ScanKey = tuple[str, str]  # registry, manifest digest
DONE_STATES = frozenset({ScanState.INDEXED, ScanState.UNSUPPORTED})


class ScannerService:
    def __init__(
        self,
        settings: Settings,
        *,
        state: StateStore | None = None,
        codec: EventCodec | None = None,
        clair: ClairClient | None = None,
    ) -> None:
        self.settings = settings
        cfg = settings.scanner
        self.cfg = cfg
        self.codec = codec or make_codec(settings)
        self.state = state or StateStore(settings.state.database_url)
        self.topics = settings.topics
        self.clair = clair or ClairClient(
            cfg.clair_url,
            deadline_s=cfg.poll_deadline_s,
            poll_interval_s=cfg.poll_interval_s,
            poll_max_interval_s=cfg.poll_max_interval_s,
            request_timeout_s=cfg.request_timeout_s,
        )
        self.locator = LayerLocator(settings)
        self.scanner = ManifestScanner(self.clair, self.locator)
        self.pool = ThreadPoolExecutor(cfg.max_inflight_images, thread_name_prefix="scan")
        # Manifests known scanned: repeated ImageCached events of popular images never reach the database.
        self.known_done: LRUCache[ScanKey, bool] = LRUCache(maxsize=100_000)
        retry_topic = self.topics.image_cached_retry.name
        self.loop = TransactionalLoop(
            settings.kafka,
            LoopConfig(
                stage="scanner",
                group_id=cfg.group_id,
                transactional_id=cfg.transactional_id,
                topics=[self.topics.image_cached.name, retry_topic],
                retry_topic=retry_topic,
                batch_size=cfg.batch_size,
                max_poll_interval_ms=cfg.max_poll_interval_ms,
                health_port=cfg.health_port,
            ),
            self.process,
            metrics=LoopMetrics(batch_seconds=metrics.BATCH_SECONDS, lag=metrics.LAG),
            logger=log,
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.loop.run(on_close=self._close)

    def stop(self, *_: Any) -> None:
        self.loop.stop()

    def install_signal_handlers(self) -> None:
        self.loop.install_signal_handlers()

    def _close(self) -> None:
        self.pool.shutdown(wait=True)
        self.clair.close()

    # -- one batch ---------------------------------------------------------------------------------
    def process(self, msgs: list[Message]) -> list[Outcome]:
        jobs: list[Any] = []
        in_batch: set[str] = set()
        for m in msgs:
            ev, pre = self._triage(m, in_batch)
            jobs.append(pre if pre is not None else self.pool.submit(self._handle, m, ev))
        return [j if isinstance(j, Outcome) else j.result() for j in jobs]

    def _triage(self, m: Message, in_batch: set[str]) -> tuple[dict[str, Any] | None, Outcome | None]:
        """Cheap decisions in the poll thread: undecodable records and redelivered duplicates."""
        try:
            record, ev = self.codec.decode(m.value())
            if record != "ImageCached":
                raise ValueError(f"expected an ImageCached record, got {record}")
        except Exception as exc:
            return None, self._dead_letter(m, exc, attempts=1)
        if ev["event_id"] in in_batch:
            metrics.EVENTS.labels("duplicate_in_batch").inc()
            return ev, Outcome(label="duplicate_in_batch")
        in_batch.add(ev["event_id"])
        return ev, None

    def _handle(self, m: Message, ev: dict[str, Any]) -> Outcome:
        info = read_retry_headers(m.headers())
        try:
            route = self.locator.route(ev["registry"], ev["repository"])
        except Exception as exc:
            return self._dead_letter(m, exc, attempts=info.attempt + 1)
        records: list[OutRecord] = []
        done: list[ScanResult] = []
        reported_before: set[str] = set()  # digests that had a final report before this scan (rescans)
        failure: tuple[str, BaseException] | None = None
        with metrics.INFLIGHT_SCANS.track_inprogress():
            for manifest in ev["manifests"]:
                if self._already_scanned(ev["registry"], manifest["digest"]):
                    continue
                if self._mark_pending(ev["registry"], ev["repository"], manifest["digest"]):
                    reported_before.add(manifest["digest"])
                try:
                    result = self._scan(route, ev, manifest)
                except Exception as exc:
                    failure = (manifest["digest"], exc)
                    break
                records.append(self._scanned_record(ev, result))
                done.append(result)
        # None when nothing was scanned: the loop may then batch this offset's commit with later ones.
        after = self._recorder(ev, done, reported_before) if done else None
        if failure is None:
            label = "scanned" if done else "already_scanned"
            metrics.EVENTS.labels(label).inc()
            return Outcome(records=records, label=label, after_commit=after)
        digest, exc = failure
        # Manifests scanned before the failure keep their results; the event comes back for the rest.
        if not is_transient(exc):
            out = self._dead_letter(m, exc, attempts=info.attempt + 1)
            return Outcome(records=[*records, *out.records], label=out.label, after_commit=after)
        return self._reschedule(m, ev, info, digest, exc, records, after)

    def _reschedule(
        self,
        m: Message,
        ev: dict[str, Any],
        info: RetryInfo,
        digest: str,
        exc: BaseException,
        records: list[OutRecord],
        after: Callable[[], None] | None,
    ) -> Outcome:
        step = next_step(info, self.cfg.retry_delays_s, int(time.time() * 1000))
        if step is None:
            out = self._dead_letter(m, exc, attempts=info.attempt + self.cfg.attempts_in_process)
            return Outcome(records=[*records, *out.records], label=out.label, after_commit=after)
        metrics.RETRIES.labels("retry_topic").inc()
        metrics.EVENTS.labels("retried").inc()
        error = describe(exc)
        log.warning(
            "rescheduled on the retry topic",
            extra={"event_id": ev["event_id"], "digest": digest, "retry": step.attempt, "error": error},
        )
        rec = retry_record(m, self.topics.image_cached_retry.name, step, error)

        def after_retry() -> None:
            if after is not None:
                after()
            self._safe_state(
                self.state.record_scan,
                ev["registry"],
                ev["repository"],
                digest,
                scanner=SCANNER,
                state=ScanState.PENDING,
                error=f"retry {step.attempt} queued: {error}",
            )

        return Outcome(records=[*records, rec], label="retried", after_commit=after_retry)

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
            self.known_done[key] = True
            return True
        return False

    def _scan(self, route: Route, ev: dict[str, Any], manifest: dict[str, Any]) -> ScanResult:
        """Attempts in process: Clair unavailable -> raised after the last; IndexError -> final index_error."""
        repository, digest = ev["repository"], manifest["digest"]
        extra = {"event_id": ev["event_id"], "repository": repository, "digest": digest}
        attempts = self.cfg.attempts_in_process
        for attempt in range(1, attempts + 1):
            try:
                with metrics.SCAN_SECONDS.time():
                    result = self.scanner.scan(route, repository, manifest)
                log.info(
                    "scanned",
                    extra={
                        **extra,
                        "state": result.state.value,
                        "packages": result.packages,
                        "vulnerabilities": ",".join(result.vulnerability_names),
                        "error": result.error,
                    },
                )
                return result
            except IndexFailed as exc:
                log.warning("Clair reported IndexError", extra={**extra, "attempt": attempt, "error": str(exc)})
                if attempt == attempts:
                    return self.scanner.index_error(digest, describe(exc))
            except Exception as exc:
                if not is_transient(exc) or attempt == attempts:
                    raise
                log.warning("scan attempt failed", extra={**extra, "attempt": attempt, "error": describe(exc)})
            metrics.RETRIES.labels("in_process").inc()
            if self.loop.stopping:
                raise InterruptedError("stopping: the scan will be retried")
            time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
        raise AssertionError("unreachable")

    def _mark_pending(self, registry: str, repository: str, digest: str) -> bool:
        """Start a scan attempt in the state DB; True when the manifest already had a final report (a rescan)."""
        try:
            row = self.state.scan_for(registry, digest)
        except Exception:
            log.exception("state lookup failed", extra={"digest": digest})
            return False
        # A retried event finds its row pending already: that attempt was counted when the retry was queued.
        if row is None or row.state is not ScanState.PENDING:
            self._safe_state(
                self.state.record_scan, registry, repository, digest, scanner=SCANNER, state=ScanState.PENDING
            )
        return row is not None and row.state in DONE_STATES

    def _scanned_record(self, ev: dict[str, Any], result: ScanResult) -> OutRecord:
        topic = self.topics.image_scanned.name
        value = self.codec.encode("ImageScanned", result.event(ev), topic)
        headers = [("layerfill.caused_by", ev["event_id"].encode())]
        return OutRecord(topic, repository_key(ev["registry"], ev["repository"]), value, headers)

    def _recorder(
        self, ev: dict[str, Any], results: list[ScanResult], reported_before: frozenset[str] | set[str] = frozenset()
    ) -> Callable[[], None]:
        def record() -> None:
            for r in results:
                self._safe_state(
                    self.state.record_scan,
                    ev["registry"],
                    ev["repository"],
                    r.digest,
                    scanner=SCANNER,
                    state=r.state,
                    scanner_version=r.scanner_version,
                    package_count=r.packages,
                    vulnerabilities=r.vulnerabilities,
                    report_uri=r.report_uri,
                    error=r.error,
                )
                metrics.SCANS.labels(r.state.value).inc()
                if r.digest not in reported_before and r.state in DONE_STATES:
                    for severity, count in (r.vulnerabilities or {}).items():
                        if count:
                            metrics.NEW_VULNERABILITIES.labels(severity).inc(count)
                if r.state in DONE_STATES:
                    self.known_done[(ev["registry"], r.digest)] = True

        return record

    def _dead_letter(self, m: Message, exc: BaseException, *, attempts: int) -> Outcome:
        metrics.DEAD_LETTERS.labels(type(exc).__name__).inc()
        metrics.EVENTS.labels("dead_lettered").inc()
        log.warning("dead-lettered", extra={"error": describe(exc), "attempts": attempts})
        rec = dead_letter_record(
            m,
            self.topics.dlq.name,
            stage="scanner",
            consumer_group=self.cfg.group_id,
            error_class=type(exc).__name__,
            error_message=describe(exc),
            attempts=attempts,
        )
        return Outcome(records=[rec], label="dead_lettered")

    def _safe_state(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        # The state DB mirrors what the committed events say: losing a write costs a rescan, never a result.
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("state update failed", extra={"call": getattr(fn, "__name__", str(fn))})

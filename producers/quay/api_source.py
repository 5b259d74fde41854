"""Quay's logs API (`GET /api/v1/organization/<org>/logs`, the default database logs model) -> ManifestPulled.

Polled every `poll_interval_s` with an OAuth token (org:admin on the organizations). Which entries are new is
decided by the checkpoint (checkpoint.py); the checkpoint is a record on a compacted topic written in the SAME
Kafka transaction as the events it accounts for, so a crash either loses both (the entries are read and
published again) or keeps both (they are never published again): no pull is lost or published twice across
restarts. Quay down or answering 5xx: the poll is retried at the next interval; nothing advances."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import requests
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from layerfill.config.settings import Settings, TopicSpec
from layerfill.kafka.admin import ensure_topics
from layerfill.kafka.producer import OutRecord, producer_config
from layerfill.observability.http import serve_health
from layerfill.wiring import make_codec

from .checkpoint import Checkpoint, select_new
from .entry import InvalidEntry, Skip, api_datetime, api_entry, api_key, number_occurrences
from .pulls import ENTRIES, dead_letter_entry, filters_for, pull_event, pull_record, robot_credentials
from .resolve import ResolveFailed, TagResolver

log = logging.getLogger("layerfill.quay_logs")
MAX_PAGES = 10_000


class QuayApiError(RuntimeError):
    pass


class ApiLogsSource:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        cfg = settings.quay_logs
        if cfg.api_token is None:
            raise ValueError("quay_logs.api_token (an OAuth token with org:admin) is required for source 'api'")
        self.cfg = cfg
        self.registry = cfg.registry_name()
        self.filters = filters_for(settings)
        self.codec = make_codec(settings)
        self.resolver = TagResolver(cfg.quay_url, robot_credentials(settings), cfg.resolve_deadline_s)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {cfg.api_token.get_secret_value()}"
        self.key = f"{self.registry}|{','.join(sorted(self.filters.organizations))}".encode()
        self.producer = Producer(producer_config(settings.kafka, **{"transactional.id": cfg.transactional_id}))
        self._stop = threading.Event()
        self._ready = False
        self._fatal: str | None = None

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        if self.cfg.health_port:
            serve_health("0.0.0.0", self.cfg.health_port, lambda: self._fatal is None, lambda: self._ready)
        spec = TopicSpec(name=self.cfg.checkpoint_topic, partitions=1, cleanup_policy="compact", retention_ms=None)
        ensure_topics(self.settings.kafka, [spec])
        # Fences an earlier instance with this transactional.id and aborts its open transaction first.
        self.producer.init_transactions(60)
        ckpt = self.load_checkpoint() or Checkpoint.start()
        self._ready = True
        log.info("quay-logs (api) following", extra={"organizations": ",".join(sorted(self.filters.organizations)),
                                                     "since": ckpt.newest.isoformat()})  # fmt: skip
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    ckpt = self.poll(ckpt)
                except (QuayApiError, requests.RequestException) as exc:
                    log.warning("Quay's logs API unavailable; trying again", extra={"error": str(exc)})
                self._stop.wait(max(0.0, self.cfg.poll_interval_s - (time.monotonic() - started)))
        finally:
            self._ready = False
            self.resolver.close()
            log.info("quay-logs (api) stopped")

    def poll(self, ckpt: Checkpoint) -> Checkpoint:
        start = ckpt.window_start(self.cfg.lookback_s)
        items: list[tuple[str, datetime, dict[str, Any], int]] = []
        for org in sorted(self.filters.organizations):
            entries = list(reversed(self.fetch(org, start)))  # oldest first: new entries get new occurrences
            for raw, occ in zip(entries, number_occurrences(entries), strict=True):
                try:
                    when = api_datetime(raw.get("datetime") if isinstance(raw, dict) else None)
                except InvalidEntry:
                    ENTRIES.labels("api", "skipped_bad-datetime").inc()
                    continue
                items.append((api_key(raw, occ), when, raw, occ))
        items.sort(key=lambda it: it[1])
        new, after = select_new([(k, w) for k, w, _, _ in items], ckpt, self.cfg.lookback_s)
        if not new and after == ckpt:
            return ckpt
        records = [rec for i in new if (rec := self.record(items[i][2], items[i][3])) is not None]
        self.commit(records, after)
        return after

    def record(self, raw: dict[str, Any], occurrence: int) -> OutRecord | None:
        try:
            parsed = api_entry(raw, self.filters, occurrence)
            if isinstance(parsed, Skip):
                ENTRIES.labels("api", f"skipped_{parsed.reason.split(':')[0]}").inc()
                return None
            digest = parsed.digest or self.resolver.resolve(parsed.repository, parsed.tag or "")
            ev = pull_event(parsed, self.registry, digest)
            rec = pull_record(self.codec, self.settings, ev)
        except (InvalidEntry, ResolveFailed, ValueError) as exc:
            cls = type(exc).__name__
            log.warning("dead-lettering a Quay log entry", extra={"error_class": cls, "error": str(exc)})
            ENTRIES.labels("api", "dead_lettered").inc()
            return dead_letter_entry(self.settings, raw, cls, str(exc), original_topic=f"quay-api:{self.cfg.quay_url}")
        ENTRIES.labels("api", "published").inc()
        log.info("published", extra={"event_id": ev.event_id, "repository": ev.repository, "digest": ev.digest})
        return rec

    # -- Quay ----------------------------------------------------------------------------------------
    def fetch(self, org: str, start: datetime) -> list[dict[str, Any]]:
        """The org's log entries, newest first, down to `start` (the API filters by day only)."""
        today = datetime.now(UTC)
        params = {"starttime": start.strftime("%m/%d/%Y"), "endtime": today.strftime("%m/%d/%Y")}
        url = f"{self.cfg.quay_url}/api/v1/organization/{org}/logs"
        out: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            resp = self.http.get(url, params=params, timeout=30)
            if resp.status_code != 200:
                raise QuayApiError(f"GET {url}: {resp.status_code} {resp.text[:200]}")
            doc = resp.json()
            logs = doc.get("logs") or []
            out.extend(e for e in logs if isinstance(e, dict))
            oldest = _oldest(logs)
            if not doc.get("next_page") or (oldest is not None and oldest < start):
                break
            params = {**params, "next_page": doc["next_page"]}
        return out

    # -- Kafka ---------------------------------------------------------------------------------------
    def commit(self, records: list[OutRecord], ckpt: Checkpoint) -> None:
        """The events and the checkpoint that accounts for them, in one transaction."""
        try:
            self.producer.begin_transaction()
            for rec in [*records, OutRecord(self.cfg.checkpoint_topic, self.key, ckpt.dumps(), [])]:
                self.producer.produce(rec.topic, value=rec.value, key=rec.key, headers=list(rec.headers))
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                self._fatal = err.str()
                raise
            try:
                self.producer.abort_transaction(60)
            except KafkaException:
                log.exception("abort failed")
            raise QuayApiError(f"Kafka transaction aborted ({err.str()}); the entries are read again") from exc

    def load_checkpoint(self) -> Checkpoint | None:
        """The last committed checkpoint of this source (registry + organizations) on the compacted topic."""
        consumer = Consumer({**self.settings.kafka.client_config(), "group.id": "layerfill-quay-logs-checkpoint",
                             "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
        try:
            tp = TopicPartition(self.cfg.checkpoint_topic, 0)
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            if high <= low:
                return None
            consumer.assign([TopicPartition(self.cfg.checkpoint_topic, 0, low)])
            found: bytes | None = None
            # read_committed stops at the last stable offset: an aborted transaction's records are skipped.
            while True:
                msg = consumer.poll(5)
                if msg is None:
                    break
                if msg.error():
                    continue
                if msg.key() == self.key:
                    found = msg.value()
                if msg.offset() >= high - 1:
                    break
            return Checkpoint.loads(found) if found else None
        finally:
            consumer.close()


def _oldest(logs: list[Any]) -> datetime | None:
    times = []
    for e in logs:
        try:
            times.append(api_datetime(e.get("datetime")))
        except (InvalidEntry, AttributeError):
            continue
    return min(times) if times else None

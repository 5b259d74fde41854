"""Quay's action logs from Kafka (LOGS_MODEL elasticsearch, producer kafka) -> ManifestPulled.

Runs on the same exactly-once loop as the fetcher (layerfill/kafka/txloop.py), in its own consumer group:
the events of a batch and the batch's consumed offsets commit in one Kafka transaction, so a crash or a
restart re-reads an uncommitted batch and publishes it again only in a transaction that never committed
(consumers reading read_committed, like the fetcher, never see it). Entries that cannot become an event are
dead-lettered with their cause in the same transaction; nothing raises out of the handler."""

from __future__ import annotations

import json
import logging

from confluent_kafka import Message

from layerfill.config.settings import Settings
from layerfill.kafka.txloop import LoopConfig, Outcome, TransactionalLoop
from layerfill.wiring import make_codec

from .entry import InvalidEntry, QuayPull, Skip, kafka_entry
from .kinds import KindsUnavailable, load_kinds, read_kinds
from .pulls import ENTRIES, dead_letter_entry, filters_for, pull_event, pull_record, robot_credentials
from .resolve import ResolveFailed, TagResolver

log = logging.getLogger("layerfill.quay_logs")


class KafkaLogsSource:
    def __init__(self, settings: Settings) -> None:
        cfg = settings.quay_logs
        self.handler = KafkaLogHandler(settings)
        self.loop = TransactionalLoop(
            settings.kafka,
            LoopConfig(
                stage="quay-logs",
                group_id=cfg.group_id,
                transactional_id=cfg.transactional_id,
                topics=[cfg.logs_topic],
                retry_topic=None,
                batch_size=cfg.batch_size,
                health_port=cfg.health_port,
            ),
            self.handler.handle,
            logger=log,
        )

    def install_signal_handlers(self) -> None:
        self.loop.install_signal_handlers()

    def run(self) -> None:
        orgs = ",".join(sorted(self.handler.filters.organizations))
        log.info("quay-logs (kafka) following", extra={"organizations": orgs})
        self.loop.run(on_close=self.handler.resolver.close)


class KafkaLogHandler:
    """One batch of Quay's log records -> outcomes (ManifestPulled, dead letter, or nothing). No Kafka I/O."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        cfg = settings.quay_logs
        self.registry = cfg.registry_name()
        self.filters = filters_for(settings)
        self.kinds = load_kinds(cfg)
        self.codec = make_codec(settings)
        self.resolver = TagResolver(cfg.quay_url, robot_credentials(settings), cfg.resolve_deadline_s)

    def handle(self, msgs: list[Message]) -> list[Outcome]:
        return [self.one(m) for m in msgs]

    def one(self, m: Message) -> Outcome:
        value = m.value() or b""
        where = {"original_topic": m.topic(), "original_partition": m.partition(), "original_offset": m.offset(),
                 "consumer_group": self.settings.quay_logs.group_id}  # fmt: skip
        try:
            parsed = self._parse(value)
            if isinstance(parsed, Skip):
                ENTRIES.labels("kafka", f"skipped_{parsed.reason.split(':')[0]}").inc()
                return Outcome(label="skipped")
            digest = parsed.digest or self.resolver.resolve(parsed.repository, parsed.tag or "")
            ev = pull_event(parsed, self.registry, digest)
            rec = pull_record(self.codec, self.settings, ev)
        except (InvalidEntry, ResolveFailed, ValueError) as exc:
            cls = type(exc).__name__
            log.warning("dead-lettering a Quay log entry", extra={"error_class": cls, "error": str(exc)})
            ENTRIES.labels("kafka", "dead_lettered").inc()
            return Outcome(records=[dead_letter_entry(self.settings, value, cls, str(exc), **where)], label="dead")
        ENTRIES.labels("kafka", "published").inc()
        log.info("published", extra={"event_id": ev.event_id, "repository": ev.repository, "digest": ev.digest})
        return Outcome(records=[rec], label="published")

    def _parse(self, value: bytes) -> QuayPull | Skip:
        try:
            raw = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise InvalidEntry(f"log entry is not JSON: {exc}") from None
        try:
            return kafka_entry(raw, self.kinds, self.filters)
        except InvalidEntry as exc:
            # A kind this process has not loaded (Quay upgraded while it ran): read the table once more.
            if "logentrykind" not in str(exc) or self.settings.quay_logs.kinds_database_url is None:
                raise
            try:
                self.kinds = read_kinds(self.settings.quay_logs.kinds_database_url.get_secret_value())
            except KindsUnavailable:
                raise exc from None
            return kafka_entry(raw, self.kinds, self.filters)

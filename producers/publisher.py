"""The library API for registries written in Python (Quay is one) and the core the bridge and CLI share:
validate, encode, publish, and return only once Kafka acknowledged."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from layerfill.config.settings import Settings, load_settings
from layerfill.kafka.deadletter import dead_letter, dlq_headers
from layerfill.kafka.keys import DIGEST_HEADER, SOURCE_HEADER, repository_key
from layerfill.kafka.producer import Delivered, EventProducer, OutRecord
from layerfill.oci import mediatypes
from layerfill.oci.digest import digest_of
from layerfill.oci.reference import validate_digest, validate_registry, validate_repository, validate_tag_or_digest
from layerfill.serde import events
from layerfill.serde.codec import EventCodec
from layerfill.wiring import make_codec

from .pull_event import InvalidEvent, PullEvent

RECORD = "ManifestPulled"
# A dead-lettered notification event is kept whole up to this size. The bridge accepts bodies larger than
# Kafka's default message.max.bytes (1,000,000): an untruncated record would fail to produce, the request
# would get a 5xx, and the registry would retry that one bad event forever.
MAX_DEAD_LETTER_BYTES = 256 * 1024


class Publisher:
    """Thread-safe; one per process. `publish_*` return after Kafka acknowledged (acks=all, idempotent
    producer) and raise `KafkaUnavailable` otherwise, so the caller can answer 5xx and be retried."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        producer: EventProducer | None = None,
        codec: EventCodec | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.producer = producer or EventProducer(self.settings.kafka, role="publisher")
        self.codec = codec or make_codec(self.settings)
        self.topic = self.settings.topics.manifest_pulled.name

    def record(self, ev: PullEvent) -> OutRecord:
        return manifest_pulled_record(self.codec, self.topic, ev)

    def publish(self, evs: Sequence[PullEvent], invalid: Sequence[InvalidEvent] = (), *, stage: str = "bridge",
                timeout: float | None = None) -> list[Delivered]:  # fmt: skip
        """Publish events and dead-letter invalid ones in one acknowledged batch."""
        records = [self.record(ev) for ev in evs]
        for bad in invalid:
            raw = json.dumps(bad.raw, default=str).encode()
            extra = {}
            if len(raw) > MAX_DEAD_LETTER_BYTES:
                extra["truncated.from.bytes"] = str(len(raw))
                raw = raw[:MAX_DEAD_LETTER_BYTES]
            headers = dlq_headers(stage=stage, error_class="InvalidEvent", error_message=bad.reason, extra=extra)
            records.append(dead_letter(self.settings.topics.dlq.name, None, raw, headers))
        if not records:
            return []
        return self.producer.send_and_wait(records, timeout=timeout or self.settings.bridge.delivery_timeout_s)

    def publish_manifest_pulled(
        self,
        *,
        registry: str,
        repository: str,
        digest: str,
        reference: str | None = None,
        media_type: str | None = None,
        manifest: bytes | None = None,
        source: str = "library",
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        timeout: float | None = None,
    ) -> Delivered:
        """One ManifestPulled, validated (ValueError naming the bad field) and acknowledged by Kafka."""
        ev = build_event(
            registry=registry, repository=repository, digest=digest, reference=reference, media_type=media_type,
            manifest=manifest, source=source, event_id=event_id, occurred_at=occurred_at,
        )  # fmt: skip
        return self.publish([ev], timeout=timeout)[0]

    def close(self) -> None:
        self.producer.close()


def manifest_pulled_record(codec: EventCodec, topic: str, ev: PullEvent) -> OutRecord:
    """The ManifestPulled record of `ev`, as every producer publishes it (also inside a Kafka transaction). The
    digest and source headers let the fetcher triage a repeat pull without decoding (layerfill.kafka.keys)."""
    return OutRecord(
        topic=topic,
        key=repository_key(ev.registry, ev.repository),
        value=codec.encode(RECORD, ev.to_avro(), topic),
        headers=[
            ("layerfill.event_id", ev.event_id.encode()),
            (SOURCE_HEADER, ev.source.encode()),
            (DIGEST_HEADER, ev.digest.encode()),
        ],
    )


def build_event(
    *,
    registry: str,
    repository: str,
    digest: str,
    reference: str | None = None,
    media_type: str | None = None,
    manifest: bytes | None = None,
    source: str = "library",
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> PullEvent:
    validate_registry(registry)
    validate_repository(repository)
    validate_digest(digest)
    if reference is not None:
        validate_tag_or_digest(reference, "reference")
    if media_type is not None and not (mediatypes.is_manifest(media_type) or mediatypes.is_index(media_type)):
        raise ValueError(f"invalid media_type {media_type!r}: not an image manifest or index type")
    if manifest is not None and digest_of(manifest) != digest:
        raise ValueError("invalid manifest: its bytes do not hash to digest")
    when = occurred_at or events.utc_now()
    eid = event_id or events.event_id("manifest-pulled", source, registry, repository, digest, when.isoformat())
    return PullEvent(
        event_id=eid, source=source, registry=registry, repository=repository, digest=digest, occurred_at=when,
        reference=reference, media_type=media_type, manifest=manifest,
    )  # fmt: skip


def publish_manifest_pulled(**kwargs: Any) -> Delivered:
    """Convenience for scripts: a one-off Publisher from the environment's settings."""
    pub = Publisher()
    try:
        return pub.publish_manifest_pulled(**kwargs)
    finally:
        pub.close()

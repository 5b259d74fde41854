"""What both Quay sources share: which organizations and pullers count, and a parsed pull -> the
ManifestPulled record the bridge would publish (source "quay", event_id from the log entry's identity, so a
redelivered or re-read entry is the same event)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import Counter

from layerfill.config.settings import Settings
from layerfill.kafka.deadletter import dead_letter, dlq_headers
from layerfill.kafka.producer import OutRecord
from layerfill.serde import events
from layerfill.serde.codec import EventCodec

from ..publisher import MAX_DEAD_LETTER_BYTES, manifest_pulled_record
from ..pull_event import PullEvent
from .entry import Filters, QuayPull

SOURCE = "quay"
STAGE = "quay-logs"
ENTRIES = Counter(
    "layerfill_quay_logs_entries_total",
    "Quay log entries by source (kafka, api) and outcome (published, dead_lettered, skipped_<reason>)",
    ["source", "outcome"],
)


def filters_for(settings: Settings) -> Filters:
    """Organizations: quay_logs.organizations, else the first path segment of every route prefix for the
    registry. Ignored pullers: quay_logs.ignore_users plus those routes' proxy_username (layerfill itself)."""
    cfg = settings.quay_logs
    registry = cfg.registry_name().lower()
    routes = [r for r in settings.routes if r.registry.lower() == registry]
    orgs = cfg.organizations
    if orgs is None:
        orgs = sorted({r.repository_prefix.split("/", 1)[0] for r in routes if r.repository_prefix})
    if not orgs:
        raise ValueError(
            f"no organization to follow: no route for registry {registry!r} names a repository_prefix "
            "(an organization) and quay_logs.organizations is not set"
        )
    ignore = set(cfg.ignore_users) | {r.proxy_username for r in routes if r.proxy_username}
    return Filters(organizations=frozenset(orgs), ignore_users=frozenset(ignore))


def pull_event(pull: QuayPull, registry: str, digest: str) -> PullEvent:
    return PullEvent(
        event_id=events.event_id("manifest-pulled", SOURCE, registry, pull.entry_key),
        source=SOURCE,
        registry=registry,
        repository=pull.repository,
        digest=digest,
        occurred_at=pull.occurred_at,
        reference=pull.tag,
        media_type=pull.media_type,
    )


def pull_record(codec: EventCodec, settings: Settings, ev: PullEvent) -> OutRecord:
    return manifest_pulled_record(codec, settings.topics.manifest_pulled.name, ev)


def dead_letter_entry(settings: Settings, raw: bytes | Any, error_class: str, reason: str, **where: Any) -> OutRecord:
    """The entry's bytes as read, with the cause in the dead-letter headers."""
    value = raw if isinstance(raw, bytes) else json.dumps(raw, default=str).encode()
    extra = {}
    if len(value) > MAX_DEAD_LETTER_BYTES:
        extra["truncated.from.bytes"] = str(len(value))
        value = value[:MAX_DEAD_LETTER_BYTES]
    headers = dlq_headers(stage=STAGE, error_class=error_class, error_message=reason, extra=extra, **where)
    return dead_letter(settings.topics.dlq.name, None, value, headers)


def robot_credentials(settings: Settings) -> tuple[str, str] | None:
    """The routes' proxy credentials for the Quay registry (the robot), used for tag HEADs."""
    registry = settings.quay_logs.registry_name().lower()
    for r in settings.routes:
        if r.registry.lower() == registry and r.proxy_username and r.proxy_password:
            return r.proxy_username, r.proxy_password.get_secret_value()
    return None

"""Builders for event values (plain dicts in the shape of ``schemas/*.avsc``).

Timestamps are timezone-aware ``datetime``s (fastavro encodes them as timestamp-millis). Event ids are
UUIDv5 over a natural key, so re-delivering the same notification, or reprocessing the same pull,
yields the same id and downstream processing stays idempotent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from layerfill import schemas

# Fixed forever: changing it changes every event id.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:layerfill:event-id")


def _symbols(record: str, *path: str) -> tuple[str, ...]:
    """Enum symbols at a field path of a current schema, so the schemas stay the only source of truth."""
    root = schemas.load_schema(record)
    named = root["__named_schemas"]
    schema: Any = root
    for step in path:
        schema = next(f["type"] for f in schema["fields"] if f["name"] == step)
        if isinstance(schema, dict) and schema["type"] == "array":
            schema = schema["items"]
        if isinstance(schema, str):
            schema = named[schema]
    return tuple(schema["symbols"])


SOURCES = _symbols("ManifestPulled", "source")
BLOB_KINDS = _symbols("LayerCached", "kind")
CACHE_OUTCOMES = _symbols("LayerCached", "outcome")
SCAN_STATES = _symbols("ImageScanned", "state")
SKIP_REASONS = _symbols("ImageCached", "skipped", "reason")


def event_id(kind: str, *natural_key: str) -> str:
    """Deterministic id for an event of ``kind`` identified by ``natural_key`` parts.

    E.g. ``event_id("manifest-pulled", "distribution", notification_id)``. Parts are JSON-encoded
    together, so ("a/b", "c") and ("a", "b/c") never collide.
    """
    if not natural_key:
        raise ValueError("event_id needs at least one natural key part")
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps([kind, *natural_key], separators=(",", ":"))))


# The builders take an ``event_id`` keyword, which shadows the function inside them.
_derived_id = event_id


def utc_now() -> datetime:
    """Now, timezone-aware, truncated to the millisecond precision the events carry."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _aware(field: str, value: datetime | None) -> datetime:
    if value is None:
        return utc_now()
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be a timezone-aware datetime, got {value!r}")
    return value


def _symbol(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _count(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be a non-negative integer, got {value!r}")
    return value


def manifest_pulled(
    *,
    event_id: str,
    source: str,
    registry: str,
    repository: str,
    digest: str,
    occurred_at: datetime | None = None,
    reference: str | None = None,
    media_type: str | None = None,
    manifest: bytes | None = None,
) -> dict[str, Any]:
    """A ManifestPulled value; ``occurred_at`` defaults to now."""
    return {
        "event_id": event_id,
        "occurred_at": _aware("occurred_at", occurred_at),
        "source": _symbol("source", source, SOURCES),
        "registry": registry,
        "repository": repository,
        "reference": reference,
        "digest": digest,
        "media_type": media_type,
        "manifest": manifest,
    }


def layer_cached(
    *,
    caused_by: str,
    registry: str,
    repository: str,
    manifest_digest: str,
    digest: str,
    size: int,
    media_type: str,
    kind: str,
    outcome: str,
    bytes_fetched: int = 0,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A LayerCached value; ``event_id`` defaults to one derived from (caused_by, manifest_digest, digest)."""
    return {
        "event_id": event_id or _derived_id("layer-cached", caused_by, manifest_digest, digest),
        "caused_by": caused_by,
        "registry": registry,
        "repository": repository,
        "manifest_digest": manifest_digest,
        "digest": digest,
        "size": _count("size", size),
        "media_type": media_type,
        "kind": _symbol("kind", kind, BLOB_KINDS),
        "outcome": _symbol("outcome", outcome, CACHE_OUTCOMES),
        "bytes_fetched": _count("bytes_fetched", bytes_fetched),
        "occurred_at": _aware("occurred_at", occurred_at),
    }


def blob_ref(digest: str, size: int, media_type: str) -> dict[str, Any]:
    """A descriptor of one blob (config or layer)."""
    return {"digest": digest, "size": _count("size", size), "media_type": media_type}


def platform(os: str, architecture: str, variant: str | None = None) -> dict[str, Any]:
    """A platform as declared by an index entry."""
    return {"os": os, "architecture": architecture, "variant": variant}


def cached_manifest(
    *,
    digest: str,
    media_type: str,
    config: dict[str, Any],
    layers: Iterable[dict[str, Any]],
    platform: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One completed image manifest of an ImageCached event."""
    return {
        "digest": digest,
        "media_type": media_type,
        "platform": platform,
        "config": config,
        "layers": list(layers),
    }


def skipped_item(digest: str, reason: str, detail: str | None = None) -> dict[str, Any]:
    """An item deliberately not cached."""
    return {"digest": digest, "reason": _symbol("reason", reason, SKIP_REASONS), "detail": detail}


def image_cached(
    *,
    caused_by: str,
    registry: str,
    repository: str,
    digest: str,
    media_type: str,
    manifests: Iterable[dict[str, Any]],
    total_bytes: int,
    fetched_bytes: int,
    started_at: datetime,
    completed_at: datetime | None = None,
    skipped: Iterable[dict[str, Any]] = (),
    reference: str | None = None,
    event_id: str | None = None,
    referrers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ImageCached value; ``event_id`` defaults to one derived from (caused_by, digest). ``referrers``: the
    supply-chain artifact counts (see ``referrer_counts``), None when the route follows none."""
    return {
        "event_id": event_id or _derived_id("image-cached", caused_by, digest),
        "caused_by": caused_by,
        "registry": registry,
        "repository": repository,
        "digest": digest,
        "media_type": media_type,
        "reference": reference,
        "manifests": list(manifests),
        "skipped": list(skipped),
        "total_bytes": _count("total_bytes", total_bytes),
        "fetched_bytes": _count("fetched_bytes", fetched_bytes),
        "started_at": _aware("started_at", started_at),
        "completed_at": _aware("completed_at", completed_at),
        "referrers": None if referrers is None else referrer_counts(**referrers),
    }


def referrer_counts(
    *,
    signatures: int = 0,
    attestations: int = 0,
    sboms: int = 0,
    other: int = 0,
    bytes: int = 0,
    skipped: int = 0,
    error: str | None = None,
) -> dict[str, Any]:
    """The ImageCached ``referrers`` record: artifacts of the image now in the cache, by kind."""
    counts = {"signatures": signatures, "attestations": attestations, "sboms": sboms, "other": other,
              "bytes": bytes, "skipped": skipped}  # fmt: skip
    if error is not None and not isinstance(error, str):
        raise ValueError(f"referrers.error must be a string or None, got {error!r}")
    return {**{k: _count(f"referrers.{k}", v) for k, v in counts.items()}, "error": error}


def vulnerability_counts(
    *, unknown: int = 0, negligible: int = 0, low: int = 0, medium: int = 0, high: int = 0, critical: int = 0
) -> dict[str, int]:
    """Vulnerability counts per normalized severity."""
    counts = {
        "unknown": unknown,
        "negligible": negligible,
        "low": low,
        "medium": medium,
        "high": high,
        "critical": critical,
    }
    return {k: _count(f"vulnerabilities.{k}", v) for k, v in counts.items()}


def image_scanned(
    *,
    caused_by: str,
    registry: str,
    repository: str,
    digest: str,
    scanner: str,
    state: str,
    occurred_at: datetime | None = None,
    scanner_version: str | None = None,
    packages: int | None = None,
    vulnerabilities: dict[str, int] | None = None,
    report_uri: str | None = None,
    error: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An ImageScanned value; ``event_id`` defaults to one derived from (caused_by, digest, scanner)."""
    return {
        "event_id": event_id or _derived_id("image-scanned", caused_by, digest, scanner),
        "caused_by": caused_by,
        "registry": registry,
        "repository": repository,
        "digest": digest,
        "scanner": scanner,
        "scanner_version": scanner_version,
        "state": _symbol("state", state, SCAN_STATES),
        "packages": None if packages is None else _count("packages", packages),
        "vulnerabilities": vulnerabilities,
        "report_uri": report_uri,
        "error": error,
        "occurred_at": _aware("occurred_at", occurred_at),
    }

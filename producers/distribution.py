"""CNCF distribution notification envelopes -> PullEvents. Pure: bytes in, events out.

Proxy repositories emit `pull` for manifest GET and HEAD and for blob GET; only manifests and indexes become
events. The registry's own event id makes event_id stable, so a redelivered envelope is the same event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from layerfill.oci import mediatypes
from layerfill.oci.reference import (
    InvalidReference,
    validate_digest,
    validate_registry,
    validate_repository,
    validate_tag,
)
from layerfill.serde.events import event_id

from .pull_event import InvalidEvent, MalformedBody, Parsed, PullEvent, load_json_body

ENVELOPE_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.events.v1+json",
        "application/vnd.docker.distribution.events.v2+json",
        "application/json",
    }
)


def parse_envelope(body: bytes, registry_name: str | None = None) -> Parsed:
    doc = load_json_body(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise MalformedBody("body must be an object with an 'events' array")
    out = Parsed()
    for raw in doc["events"]:
        try:
            ev = _event(raw, registry_name)
        except InvalidReference as exc:
            out.invalid.append(InvalidEvent(raw, str(exc)))
            continue
        except _Invalid as exc:
            out.invalid.append(InvalidEvent(raw, str(exc)))
            continue
        if isinstance(ev, str):
            out.ignore(ev)
        else:
            out.events.append(ev)
    return out


class _Invalid(ValueError):
    pass


def _field(obj: dict[str, Any], name: str, path: str, typ: type = str, required: bool = True) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid(f"{path}.{name} is missing")
        return None
    if not isinstance(value, typ) or isinstance(value, bool):
        raise _Invalid(f"{path}.{name} must be a {typ.__name__}, got {type(value).__name__}")
    return value


def _event(raw: Any, registry_name: str | None) -> PullEvent | str:
    if not isinstance(raw, dict):
        raise _Invalid("event must be an object")
    action = _field(raw, "action", "event")
    target = _field(raw, "target", "event", dict)
    media_type = _field(target, "mediaType", "target", required=False)
    if action != "pull":
        return f"action:{action}"
    if not (mediatypes.is_manifest(media_type) or mediatypes.is_index(media_type)):
        # Blob pulls, and manifest types we cannot plan (schema1); counted, not published.
        return "blob" if media_type not in mediatypes.SCHEMA1_TYPES else "schema1-manifest"
    notification_id = _field(raw, "id", "event")
    repository = validate_repository(_field(target, "repository", "target"), "target.repository")
    digest = validate_digest(_field(target, "digest", "target"), "target.digest")
    tag = _field(target, "tag", "target", required=False)
    if tag is not None:
        validate_tag(tag, "target.tag")
    request = raw.get("request") if isinstance(raw.get("request"), dict) else {}
    registry = registry_name or request.get("host")
    if not registry:
        raise _Invalid("request.host is missing and the bridge has no registry_name configured")
    registry = validate_registry(registry, "request.host")
    occurred_at = _timestamp(raw.get("timestamp"))
    return PullEvent(
        event_id=event_id("manifest-pulled", "distribution", notification_id),
        source="distribution",
        registry=registry,
        repository=repository,
        digest=digest,
        occurred_at=occurred_at,
        reference=tag,
        media_type=media_type,
    )


def _timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if ts.tzinfo is not None:
                return ts.astimezone(UTC).replace(microsecond=ts.microsecond // 1000 * 1000)
        except (ValueError, OverflowError):  # OverflowError: an offset pushes it outside datetime's years
            pass
    # The registry's clock is informational; a missing or odd timestamp must not drop the event.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)

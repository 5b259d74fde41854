"""One Quay action-log entry -> a manifest pull, or why not. Pure: no I/O.

Two shapes carry the same facts:
- Kafka (LOGS_MODEL elasticsearch + producer kafka): `kind_id` (an integer; its name comes from Quay's
  `logentrykind` table), `random_id`, `namespace_name`, `datetime` (ISO 8601, UTC without a zone), `metadata`;
- the logs API (`GET /api/v1/organization/<org>/logs`): `kind` (the name), `datetime` (RFC 2822),
  `performer.name`, `metadata`; it carries no id of the entry.
For a manifest pull `metadata` has `namespace`, `repo`, `mediaType`, the puller (`username`, or `token` /
`oauth_token_id`) and either `manifest_digest` or `tag` (a tag pull names no digest: the caller resolves it)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from layerfill.oci import mediatypes
from layerfill.oci.reference import InvalidReference, validate_digest, validate_repository, validate_tag

PULL_KIND = "pull_repo"


class InvalidEntry(ValueError):
    """An entry that claims to be a pull but cannot become an event: dead-lettered with this reason."""


@dataclass(frozen=True)
class QuayPull:
    namespace: str
    repository: str  # <namespace>/<repo>, as clients pull it
    digest: str | None  # None: a tag pull, to be resolved
    tag: str | None
    media_type: str | None
    puller: str | None
    occurred_at: datetime
    entry_key: str  # stable identity of the log entry: the natural key of the event_id


@dataclass(frozen=True)
class Skip:
    reason: str  # counted, not published: "kind:<name>", "organization", "own-pull", "blob", ...


@dataclass(frozen=True)
class Filters:
    organizations: Collection[str]  # only these namespaces (Quay organizations)
    ignore_users: Collection[str]  # layerfill's own robot(s)


def kafka_entry(raw: Any, kinds: Mapping[int, str], filters: Filters) -> QuayPull | Skip:
    """An entry of Quay's Kafka logs topic (already JSON-decoded)."""
    if not isinstance(raw, dict):
        raise InvalidEntry("log entry must be a JSON object")
    kind_id = raw.get("kind_id")
    if not isinstance(kind_id, int) or isinstance(kind_id, bool):
        raise InvalidEntry(f"kind_id must be an integer, got {type(kind_id).__name__}")
    kind = kinds.get(kind_id)
    if kind is None:
        raise InvalidEntry(f"kind_id {kind_id} is not in Quay's logentrykind table")
    if kind != PULL_KIND:
        return Skip(f"kind:{kind}")
    random_id = raw.get("random_id")
    if random_id is None:
        raise InvalidEntry("random_id is missing")
    when = _iso_datetime(raw.get("datetime"))
    key = json.dumps(["kafka", str(random_id), when.isoformat()], separators=(",", ":"))
    return _pull(raw.get("metadata"), when, key, filters)


def api_entry(raw: Any, filters: Filters, occurrence: int = 0) -> QuayPull | Skip:
    """An entry of the logs API. It has no id: its identity is a hash of everything it says, plus `occurrence`
    (how many identical entries of the same second came before it), so two identical pulls stay two events."""
    if not isinstance(raw, dict):
        raise InvalidEntry("log entry must be a JSON object")
    kind = raw.get("kind")
    if kind != PULL_KIND:
        return Skip(f"kind:{kind}")
    when = api_datetime(raw.get("datetime"))
    return _pull(raw.get("metadata"), when, api_key(raw, occurrence), filters)


def api_key(raw: Mapping[str, Any], occurrence: int = 0) -> str:
    return json.dumps(["api", content_hash(raw), occurrence], separators=(",", ":"))


def content_hash(raw: Mapping[str, Any]) -> str:
    """What identifies an API entry: kind, datetime, ip, performer and metadata (avatars left out)."""
    performer = raw.get("performer") if isinstance(raw.get("performer"), dict) else {}
    ident = [raw.get("kind"), raw.get("datetime"), raw.get("ip"), performer.get("name"), raw.get("metadata")]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _pull(metadata: Any, when: datetime, key: str, filters: Filters) -> QuayPull | Skip:
    if not isinstance(metadata, dict):
        raise InvalidEntry("metadata must be an object")
    namespace = metadata.get("namespace")
    repo = metadata.get("repo")
    if not isinstance(namespace, str) or not isinstance(repo, str):
        raise InvalidEntry("metadata.namespace and metadata.repo must be strings")
    if namespace not in filters.organizations:
        return Skip("organization")
    puller = _puller(metadata)
    if puller is not None and puller in filters.ignore_users:
        return Skip("own-pull")
    media_type = metadata.get("mediaType")
    if media_type is not None and not (mediatypes.is_manifest(media_type) or mediatypes.is_index(media_type)):
        return Skip("schema1-manifest" if media_type in mediatypes.SCHEMA1_TYPES else "not-a-manifest")
    try:
        repository = validate_repository(f"{namespace}/{repo}", "metadata.repo")
        digest = metadata.get("manifest_digest")
        tag = metadata.get("tag")
        if digest is not None:
            digest = validate_digest(digest, "metadata.manifest_digest")
        if tag is not None:
            tag = validate_tag(tag, "metadata.tag")
    except InvalidReference as exc:
        raise InvalidEntry(str(exc)) from None
    if digest is None and tag is None:
        raise InvalidEntry("metadata has neither manifest_digest nor tag")
    return QuayPull(namespace, repository, digest, tag, media_type, puller, when, key)


def _puller(metadata: Mapping[str, Any]) -> str | None:
    for field in ("username", "token", "oauth_token_id"):
        value = metadata.get(field)
        if value is not None:
            return str(value)
    return None


def _iso_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidEntry("datetime must be an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEntry(f"datetime {value!r} is not ISO 8601") from None
    return _utc_ms(dt)


def api_datetime(value: Any) -> datetime:
    """The logs API's RFC 2822 datetime (second precision)."""
    if not isinstance(value, str):
        raise InvalidEntry("datetime must be an RFC 2822 string")
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise InvalidEntry(f"datetime {value!r} is not RFC 2822") from None
    return _utc_ms(dt)


def _utc_ms(dt: datetime) -> datetime:
    # Quay writes UTC without a zone; events carry millisecond precision.
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def number_occurrences(entries: list[Any]) -> list[int]:
    """For each API entry, how many entries identical to it came earlier in the list (see api_entry)."""
    seen: dict[str, int] = {}
    out = []
    for raw in entries:
        h = content_hash(raw) if isinstance(raw, dict) else ""
        out.append(seen.get(h, 0))
        seen[h] = seen.get(h, 0) + 1
    return out

"""Harbor webhook payloads (PULL_ARTIFACT) -> PullEvents. Pure.

Harbor sends no event id, so event_id derives from (occur_at, repository, digest, operator): a redelivered
webhook is the same event, a second pull a second later is another."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from layerfill.oci.reference import (
    InvalidReference,
    validate_digest,
    validate_registry,
    validate_repository,
    validate_tag,
)
from layerfill.serde.events import event_id

from .pull_event import InvalidEvent, MalformedBody, Parsed, PullEvent, load_json_body


def parse_webhook(body: bytes, registry_name: str | None = None) -> Parsed:
    doc = load_json_body(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise MalformedBody("body must be an object with a string 'type'")
    out = Parsed()
    if doc["type"] != "PULL_ARTIFACT":
        out.ignore(f"type:{doc['type']}")
        return out
    data = doc.get("event_data")
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        raise MalformedBody("event_data.resources must be an array")
    repo = data.get("repository")
    if not isinstance(repo, dict) or not isinstance(repo.get("repo_full_name"), str):
        raise MalformedBody("event_data.repository.repo_full_name must be a string")
    occur_at = doc.get("occur_at")
    if not isinstance(occur_at, int | float) or isinstance(occur_at, bool):
        raise MalformedBody("occur_at must be a number (epoch seconds)")
    operator = doc.get("operator") if isinstance(doc.get("operator"), str) else ""
    for res in data["resources"]:
        try:
            out.events.append(_resource(res, repo["repo_full_name"], occur_at, operator, registry_name))
        except (InvalidReference, ValueError) as exc:
            out.invalid.append(InvalidEvent(res, str(exc)))
    return out


def _resource(res: Any, full_name: str, occur_at: float, operator: str, registry_name: str | None) -> PullEvent:
    if not isinstance(res, dict):
        raise ValueError("resource must be an object")
    digest = validate_digest(res.get("digest"), "resources[].digest")
    repository = validate_repository(full_name, "repository.repo_full_name")
    tag = res.get("tag") or None
    if tag is not None:
        validate_tag(tag, "resources[].tag")
    registry = registry_name or _host_of(res.get("resource_url"))
    registry = validate_registry(registry, "resources[].resource_url")
    try:
        occurred_at = datetime.fromtimestamp(occur_at, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"occur_at out of range: {occur_at}") from exc
    return PullEvent(
        event_id=event_id("manifest-pulled", "harbor", str(occur_at), repository, digest, operator),
        source="harbor",
        registry=registry,
        repository=repository,
        digest=digest,
        occurred_at=occurred_at.replace(microsecond=occurred_at.microsecond // 1000 * 1000),
        reference=tag,
    )


def _host_of(resource_url: Any) -> str:
    # resource_url is "<host>/<project>/<repo>:<tag>" (or @digest) with no scheme.
    if not isinstance(resource_url, str) or not resource_url:
        raise ValueError("resources[].resource_url is missing and the bridge has no registry_name configured")
    return urlsplit(f"//{resource_url}").netloc

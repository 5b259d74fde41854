"""Registry notification bodies as registries send them: CNCF distribution envelopes (shape recorded from the
devstack's v3.1.1 proxy) and Harbor PULL_ARTIFACT webhooks. Shared by the unit and integration tests."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from layerfill.oci import mediatypes

V1 = "application/vnd.docker.distribution.events.v1+json"
V2 = "application/vnd.docker.distribution.events.v2+json"


def fake_digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def distribution_event(
    *,
    repository: str = "library/debian",
    digest: str | None = None,
    tag: str | None = None,
    media_type: str = mediatypes.OCI_MANIFEST,
    action: str = "pull",
    method: str = "GET",
    host: str = "cache.example:5000",
    event_id: str | None = None,
    timestamp: str = "2026-11-28T04:38:03.627722884Z",
) -> dict[str, Any]:
    digest = digest or fake_digest(repository + (tag or ""))
    target: dict[str, Any] = {
        "mediaType": media_type,
        "digest": digest,
        "size": 556,
        "length": 556,
        "repository": repository,
        "url": f"http://{host}/v2/{repository}/manifests/{digest}",
    }
    if tag is not None:
        target["tag"] = tag
    return {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": timestamp,
        "action": action,
        "target": target,
        "request": {
            "id": str(uuid.uuid4()),
            "addr": "127.0.0.1:40602",
            "host": host,
            "method": method,
            "useragent": "skopeo/1.9.3",
        },
        "actor": {},
        "source": {"addr": "vm:5000", "instanceID": str(uuid.uuid4())},
    }


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}, indent=3).encode()


def harbor_pull(
    *,
    project: str = "proxy",
    name: str = "library/debian",
    digest: str | None = None,
    tag: str | None = "12",
    host: str = "harbor.example",
    occur_at: int = 1_795_000_000,
    operator: str = "robot$puller",
    event_type: str = "PULL_ARTIFACT",
) -> dict[str, Any]:
    full = f"{project}/{name}"
    digest = digest or fake_digest(full + (tag or ""))
    ref = f":{tag}" if tag else f"@{digest}"
    return {
        "type": event_type,
        "occur_at": occur_at,
        "operator": operator,
        "event_data": {
            "resources": [{"digest": digest, "tag": tag or "", "resource_url": f"{host}/{full}{ref}"}],
            "repository": {
                "date_created": occur_at - 3600,
                "name": name,
                "namespace": project,
                "repo_full_name": full,
                "repo_type": "public",
            },
        },
    }

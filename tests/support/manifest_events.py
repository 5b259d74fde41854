"""Reading back the ManifestPulled events that pulls through the devstack proxy produced.

The proxy sends notifications one at a time, in the order its requests completed, and retries each until the
listening bridge accepts it (distribution's retrying sink in front of a FIFO queue). So a manifest request made
after a test's pulls is a barrier: once its event is on the topic, every event of those pulls is there too, and
"exactly one" can be asserted without sleeping."""

from __future__ import annotations

from collections import Counter
from typing import Any

import requests

from layerfill.oci.mediatypes import ACCEPT_MANIFESTS
from tests.support.pipeline import Pipeline


def manifest_request(registry: str, repository: str, ref: str, method: str = "GET") -> requests.Response:
    """One plain manifest request to the registry, as a docker/containerd client makes it."""
    resp = requests.request(
        method, f"http://{registry}/v2/{repository}/manifests/{ref}", headers={"Accept": ACCEPT_MANIFESTS}, timeout=60
    )
    resp.raise_for_status()
    return resp


def pulled_after_barrier(
    p: Pipeline, prefix: str, barrier_repository: str, timeout: float = 120
) -> list[dict[str, Any]]:
    """Request the barrier manifest, wait for its event, and return the other events of repositories under
    `prefix` (the stack is shared: the proxy may also deliver other tests' older notifications here)."""
    manifest_request(p.devstack.proxy_registry, barrier_repository, "1", method="HEAD")
    records = p.read(
        p.topics.manifest_pulled.name,
        until=lambda rs: any(r["repository"] == barrier_repository for r in rs),
        timeout=timeout,
    )
    return [r for r in records if r["repository"].startswith(f"{prefix}/") and r["repository"] != barrier_repository]


def pulls(records: list[dict[str, Any]]) -> Counter[tuple[str, str, str | None, str]]:
    """(registry, repository, reference, digest) -> how many events."""
    return Counter((r["registry"], r["repository"], r["reference"], r["digest"]) for r in records)

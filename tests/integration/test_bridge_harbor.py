"""Acceptance (issue 3): a Harbor PULL_ARTIFACT webhook POSTed to the running bridge (`layerfill run bridge`)
becomes one ManifestPulled on Kafka; a redelivery keeps its event_id; a request without the shared secret
publishes nothing. Runs the bridge on the shared port: run under `flock /tmp/layerfill-e2e.lock`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.support.notifications import fake_digest, harbor_pull
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def bridge(devstack: DevStack, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(devstack, tmp_path / "pipeline")
    try:
        p.start("bridge")
        yield p
    finally:
        p.close()


def _post(devstack: DevStack, doc: dict, auth: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth  # Harbor sends the configured auth header value as is
    return requests.post(
        f"{devstack.ctx.bridge_url}/v1/webhooks/harbor", data=json.dumps(doc), headers=headers, timeout=30
    )


def test_harbor_pull_artifact_becomes_one_manifest_pulled(devstack: DevStack, bridge: Pipeline) -> None:
    project = unique("hb")
    token = devstack.ctx.secrets.bridge_token
    unauthorized = harbor_pull(project=project, name="library/nginx", tag="1", digest=fake_digest("nope"))
    doc = harbor_pull(
        project=project, name="library/nginx", tag="1.27", host="harbor.test:8443", occur_at=1_795_000_000
    )
    by_digest = harbor_pull(
        project=project, name="library/nginx", tag=None, host="harbor.test:8443", occur_at=1_795_000_005
    )

    assert _post(devstack, unauthorized, None).status_code == 401
    assert _post(devstack, unauthorized, "wrong").status_code == 401
    first = _post(devstack, doc, token)
    assert first.status_code == 200, first.text
    assert first.json()["published"] == 1
    # Harbor redelivers a webhook whose answer it did not get: the same event, the same event_id.
    again = _post(devstack, doc, f"Bearer {token}")
    assert again.json()["event_ids"] == first.json()["event_ids"]
    pushed = harbor_pull(project=project, name="library/nginx", event_type="PUSH_ARTIFACT")
    assert _post(devstack, pushed, token).json()["ignored"] == {"type:PUSH_ARTIFACT": 1}
    assert _post(devstack, by_digest, token).status_code == 200

    topic = bridge.topics.manifest_pulled.name
    records = bridge.read(
        topic, until=lambda rs: sum(r["repository"].startswith(f"{project}/") for r in rs) >= 3, timeout=60
    )
    mine = [r for r in records if r["repository"].startswith(f"{project}/")]
    digest = doc["event_data"]["resources"][0]["digest"]
    assert [(e["source"], e["registry"], e["repository"], e["reference"], e["digest"]) for e in mine] == [
        ("harbor", "harbor.test:8443", f"{project}/library/nginx", "1.27", digest),
        ("harbor", "harbor.test:8443", f"{project}/library/nginx", "1.27", digest),
        (
            "harbor",
            "harbor.test:8443",
            f"{project}/library/nginx",
            None,
            by_digest["event_data"]["resources"][0]["digest"],
        ),
    ]
    assert mine[0]["event_id"] == mine[1]["event_id"] == first.json()["event_ids"][0]
    assert mine[0]["occurred_at"] == datetime.fromtimestamp(1_795_000_000, UTC)
    assert unauthorized["event_data"]["resources"][0]["digest"] not in {r["digest"] for r in records}

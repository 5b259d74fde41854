"""Acceptance for `layerfill replay`: moving the fetcher's group to a time before N events makes it process them
again, and for images already complete that costs no upstream request and emits nothing."""

from __future__ import annotations

import re
import time

import pytest

from layerfill.devstack.seed import seed
from layerfill.ops.offsets import OffsetAdmin
from tests.support.ops_cli import run_cli, run_json
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

NAMES = ["demo/app-a:1", "demo/app-b:1", "demo/multi:1"]


def _upstream_requests(devstack: DevStack, prefix: str) -> int:
    """Requests the upstream registry served for our repositories, from its access log."""
    text = (devstack.ctx.paths.logs / "upstream.log").read_text(errors="replace")
    return len(re.findall(rf'"(?:GET|HEAD) /v2/{re.escape(prefix)}/', text))


def _caught_up(p: Pipeline, group: str, timeout: float = 90) -> None:
    admin = OffsetAdmin(p.settings.kafka)
    topic = p.topics.manifest_pulled.name
    try:
        parts = admin.partitions(topic)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = admin.committed(group, topic, parts)
            marks = admin.watermarks(topic, parts)
            if all((committed.get(q) or 0) >= marks[q][1] for q in parts):
                return
            time.sleep(0.5)
        raise AssertionError(f"group {group} did not catch up: {committed} vs {marks}\n{p.log('fetcher')}")
    finally:
        admin.close()


def test_replay_to_before_n_events_reprocesses_them_without_refetching(devstack: DevStack, pipeline_factory) -> None:
    prefix = unique("opsr")
    pushed = seed(devstack.ctx, large_size=8 * 1024 * 1024, prefix=prefix, names=NAMES)
    p = pipeline_factory(routes=[{"registry": devstack.proxy_registry, "repository_prefix": prefix,
                                  "strip_prefix": False, "upstream_url": f"http://{devstack.upstream_registry}",
                                  "sink": "distribution"}])  # fmt: skip
    group = f"{p.id}-fetcher"
    p.start("fetcher")
    before_events = int(time.time() * 1000) - 1000
    for name, digest in pushed.items():
        repo, tag = name.rsplit(":", 1)
        p.publish(registry=devstack.proxy_registry, repository=repo, digest=digest, reference=tag, source="cli")
    p.read(p.topics.image_cached.name, until=lambda rs: len(rs) == len(NAMES), timeout=120)
    _caught_up(p, group)
    layer_events = len(p.read(p.topics.layer_cached.name))
    requests_after_fill = _upstream_requests(devstack, prefix)
    assert requests_after_fill > 0  # the counter sees the fetcher's requests

    refused = run_cli(p, "replay", "--to-time", str(before_events), "--execute")
    assert refused.returncode == 1
    assert "active member" in refused.stderr

    p.stop("fetcher")
    plan = run_json(p, "replay", "--to-time", str(before_events))
    assert plan["applied"] is False
    assert plan["group"] == group and plan["topic"] == p.topics.manifest_pulled.name
    assert sum(m["delta"] or 0 for m in plan["partitions"]) == len(NAMES)
    assert all(m["target"] == m["low"] for m in plan["partitions"])  # every event is after the time
    applied = run_json(p, "replay", "--to-time", str(before_events), "--execute")
    assert applied["applied"] is True
    moved = run_json(p, "replay", "--to-latest")  # dry run: shows where the group now is
    assert sum(m["delta"] or 0 for m in moved["partitions"]) == -len(NAMES)

    p.start("fetcher")
    _caught_up(p, group)
    time.sleep(2)  # anything the replay might emit has been committed by now
    assert len(p.read(p.topics.image_cached.name)) == len(NAMES)  # nothing re-emitted
    assert len(p.read(p.topics.layer_cached.name)) == layer_events
    assert _upstream_requests(devstack, prefix) == requests_after_fill  # no blob or manifest fetched again


def test_replay_refuses_bad_input(pipeline_factory) -> None:
    p = pipeline_factory()
    for args, needle in [
        (["--to-time", "yesterday"], "--to-time"),
        ([], "exactly one"),
        (["--to-earliest", "--to-latest"], "exactly one"),
        (["--to-earliest", "--partition", "99"], "--partition"),
        (["--to-earliest", "--topic", "no-such-topic-" + unique()], "--topic"),
    ]:
        res = run_cli(p, "replay", *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert needle in res.stderr, (args, res.stderr)

"""Acceptance for `layerfill dlq`: an event dead-lettered for want of a route completes once the route exists
and the dead letter is replayed."""

from __future__ import annotations

import pytest

from layerfill.devstack.seed import seed
from tests.support.ops_cli import run_cli, run_json
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e


def _route(devstack: DevStack, prefix: str) -> dict:
    return {"registry": devstack.proxy_registry, "repository_prefix": prefix, "strip_prefix": False,
            "upstream_url": f"http://{devstack.upstream_registry}", "sink": "distribution"}  # fmt: skip


def test_dead_letter_without_route_completes_after_route_and_replay(devstack: DevStack, pipeline_factory) -> None:
    prefix = unique("opsd")
    pushed = seed(devstack.ctx, large_size=8 * 1024 * 1024, prefix=prefix, names=["demo/app-a:1"])
    repo, digest = f"{prefix}/demo/app-a", pushed[f"{prefix}/demo/app-a:1"]
    p = pipeline_factory(routes=[_route(devstack, unique("elsewhere"))])
    p.start("fetcher")
    sent = p.publish(registry=devstack.proxy_registry, repository=repo, digest=digest, reference="1", source="cli")
    p.read(p.topics.dlq.name, until=lambda rs: len(rs) == 1, timeout=60, raw=True)

    listed = run_json(p, "dlq", "list", "--repository", prefix)
    assert len(listed) == 1
    dead = listed[0]
    assert dead["error_class"] == "NoRoute"
    assert (dead["original_topic"], dead["original_partition"], dead["original_offset"]) == (
        p.topics.manifest_pulled.name, sent.partition, sent.offset,
    )  # fmt: skip
    assert (dead["repository"], dead["digest"], dead["record"]) == (repo, digest, "ManifestPulled")
    assert dead["attempts"] >= 1
    shown = run_json(p, "dlq", "show", f"{dead['partition']}:{dead['offset']}")
    assert shown["event"]["repository"] == repo
    assert shown["headers"]["layerfill.dlq.error.class"] == "NoRoute"
    assert run_cli(p, "dlq", "show", "nonsense").returncode == 2
    assert run_cli(p, "dlq", "replay").returncode == 2  # no filter and no --all: refused

    # Fix the cause: the route exists now (routes are read at start-up).
    p.stop("fetcher")
    p.routes = [_route(devstack, prefix)]
    p.start("fetcher")
    dry = run_json(p, "dlq", "replay", "--repository", prefix, "--dry-run")
    assert dry["records"] == [{"partition": dead["partition"], "offset": dead["offset"],
                               "to": p.topics.manifest_pulled.name, "replayed": False}]  # fmt: skip
    replayed = run_json(p, "dlq", "replay", "--from-offset", str(dead["offset"]), "--to-offset", str(dead["offset"]),
                        "--partition", str(dead["partition"]))  # fmt: skip
    assert [r["replayed"] for r in replayed["records"]] == [True]
    cached = p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == digest for r in rs), timeout=120)
    assert [r["repository"] for r in cached] == [repo]
    # The replayed record kept its key and says where it came from.
    raw = p.read(p.topics.manifest_pulled.name, raw=True)
    assert len(raw) == 2
    assert raw[0]["key"] == raw[1]["key"]
    assert (
        raw[1]["headers"]["layerfill.replayed_from"]
        == f"{p.topics.dlq.name}/{dead['partition']}/{dead['offset']}".encode()
    )
    assert len(p.read(p.topics.dlq.name, raw=True)) == 1  # not dead-lettered again

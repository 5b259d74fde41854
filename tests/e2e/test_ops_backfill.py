"""`layerfill backfill`: one ManifestPulled per manifest already in the proxy's storage, resumable, by prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from layerfill.ops.enumerate import format_position
from layerfill.state.store import StateStore
from tests.support.clients import skopeo_pull
from tests.support.ops_cli import run_json
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e


def test_backfill_publishes_each_stored_manifest_and_resumes(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("opsb")
    pushed = seed(devstack.ctx, large_size=8 * 1024 * 1024, prefix=prefix, names=["demo/app-a:1", "demo/app-b:1"])
    for name in pushed:
        repo, tag = name.rsplit(":", 1)
        assert (
            skopeo_pull(devstack.proxy_registry, repo, tag, tmp_path / "client", tag=repo.replace("/", "-")).returncode
            == 0
        )
    p = pipeline_factory()
    reg = ["--prefix", f"{prefix}/", "--registry", devstack.proxy_registry]

    dry = run_json(p, "backfill", *reg, "--dry-run")
    assert dry["would_publish"] == 2
    assert p.read(p.topics.manifest_pulled.name) == []

    # As if an earlier run stopped after the first manifest (enumeration is sorted by repository, digest).
    first_repo = sorted(n.rsplit(":", 1)[0] for n in pushed)[0]
    key = f"backfill:{devstack.proxy_registry}:{prefix}/"
    with StateStore(p.state_url) as state:
        state.set_kv(key, format_position((first_repo, pushed[f"{first_repo}:1"])))
    resumed = run_json(p, "backfill", *reg, "--rate", "20")
    assert resumed["published"] == 1
    events = p.read(p.topics.manifest_pulled.name, until=lambda rs: len(rs) == 1)
    assert [(e["repository"], e["source"], e["reference"]) for e in events] == [
        (f"{prefix}/demo/app-b", "backfill", "1")
    ]

    # A finished run clears its checkpoint: the next one covers everything again.
    with StateStore(p.state_url) as state:
        assert state.get_kv(key) is None
    again = run_json(p, "backfill", *reg)
    assert again["published"] == 2
    events = p.read(p.topics.manifest_pulled.name, until=lambda rs: len(rs) == 3)
    assert {(e["repository"], e["digest"]) for e in events[1:]} | {(events[0]["repository"], events[0]["digest"])} == {
        (n.rsplit(":", 1)[0], d) for n, d in pushed.items()
    }
    assert all(e["registry"] == devstack.proxy_registry for e in events)

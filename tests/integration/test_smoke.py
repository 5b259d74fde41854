"""Foundation smoke test: an image seeded into the upstream pulls through the proxy cache with a real client,
every blob verifies, and the proxy's notification reaches an HTTP endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from tests.support.clients import skopeo_pull, verify_layout_blobs
from tests.support.listener import NotificationListener
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration


def test_pull_through_proxy_and_notification(devstack: DevStack, catalog, tmp_path: Path) -> None:
    prefix = unique("smoke")
    pushed = seed(devstack.ctx, large_size=8 * 1024 * 1024, prefix=prefix, names=["demo/app-a:1"])
    ((ref, digest),) = pushed.items()
    repository = ref.rsplit(":", 1)[0]
    info = catalog.images["demo/app-a:1"]

    with NotificationListener(devstack.ctx.host, devstack.ctx.ports.bridge) as listener:
        res = skopeo_pull(devstack.proxy_registry, repository, "1", tmp_path / "layout")
        assert res.returncode == 0, res.stderr
        blobs = verify_layout_blobs(tmp_path / "layout")
        for blob in info.blobs():
            assert blobs.get(blob.digest) == blob.size, f"{blob.kind} {blob.digest} missing or wrong size"

        events = listener.wait_for(
            lambda ev: ev["target"].get("repository") == repository and ev["target"].get("digest") == digest
        )
    ev = events[0]
    assert ev["action"] == "pull"
    assert ev["target"]["mediaType"] == info.media_type
    assert ev["request"]["host"] == devstack.proxy_registry

"""`layerfill verify` on a route limited to some platforms: it judges an image by the route's platform policy, as
the fetcher fills it, so an image the fetcher completed is complete and `--repair` publishes nothing for it."""

from __future__ import annotations

import pytest

from layerfill.devstack.seed import seed
from tests.support.ops_cli import run_json
from tests.support.routes import route
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

SMALL = 8 * 1024 * 1024
MULTI = "demo/multi:1"


def test_verify_uses_the_routes_platforms(devstack: DevStack, catalog, pipeline_factory) -> None:
    prefix = unique("opsp")
    repository = f"{prefix}/demo/multi"
    info = catalog.images[MULTI]
    index_digest = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=[MULTI])[f"{repository}:1"]
    assert {m.platform for m in info.manifests} == {"linux/amd64", "linux/arm64/v8"}
    p = pipeline_factory(routes=[{**route(devstack, prefix), "platforms": ["linux/amd64"]}])
    p.start("fetcher")
    p.publish(registry=devstack.proxy_registry, repository=repository, digest=index_digest, reference="1")
    (cached,) = p.read(p.topics.image_cached.name, until=lambda rs: len(rs) == 1, timeout=120)
    assert [m["platform"]["architecture"] for m in cached["manifests"]] == ["amd64"]

    # The index and the amd64 manifest it stored (a manifest revision of the repository too), both complete; the
    # arm64 child the route leaves out is not missing.
    amd64 = next(m for m in info.manifests if m.platform == "linux/amd64")
    report = run_json(p, "verify", "--prefix", f"{prefix}/", "--all")
    assert report["counts"] == {"complete": 2, "partial": 0, "unknown": 0}, report
    assert {i["digest"]: i["missing"] for i in report["images"]} == {index_digest: [], amd64.digest: []}

    repaired = run_json(p, "verify", "--prefix", f"{prefix}/", "--repair", "--registry", devstack.proxy_registry)
    assert repaired["repaired"] == []

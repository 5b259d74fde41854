"""`layerfill run quay-logs` against the real Quay: both event sources publish every pull exactly once while
Quay is restarted and the source is SIGKILLed mid-stream; layerfill's own pulls (its robot) are dropped; a tag
pull is resolved to its digest through Quay."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from layerfill.devstack.seed import seed
from layerfill.remote.client import RegistryClient
from tests.support.pipeline import Pipeline
from tests.support.quay import Quay, quay_or_skip, quay_routes, start_quay_logs
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration

SMALL = 8 * 1024 * 1024


@pytest.fixture
def quay(devstack: DevStack) -> Quay:
    return quay_or_skip(devstack)


@pytest.fixture
def pipeline_factory(devstack: DevStack, tmp_path):  # type: ignore[no-untyped-def]
    made: list[Pipeline] = []

    def make(**kwargs) -> Pipeline:  # type: ignore[no-untyped-def]
        made.append(Pipeline(devstack, tmp_path / f"p{len(made)}", **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.mark.parametrize("source", ["kafka", "api"])
def test_every_pull_published_once_across_restarts(devstack: DevStack, quay: Quay, catalog, pipeline_factory,
                                                   source: str) -> None:  # fmt: skip
    prefix = unique("ql")
    pushed = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=["demo/app-a:1", "demo/app-b:1"])
    url, registry, service = (
        (quay.url, quay.registry, "quay")
        if source == "kafka"
        else (quay.dblogs_url, quay.dblogs_registry, "quay-dblogs")
    )
    repos = {name: f"{quay.org}/{prefix}/{name}" for name in ("demo/app-a", "demo/app-b")}
    digests = {name: pushed[f"{prefix}/{name}:1"] for name in repos}
    p = pipeline_factory(routes=quay_routes(quay, devstack))
    start_quay_logs(p, quay, source)
    pulls: list[tuple[str, str]] = []  # (repository, digest) of every pull by a user

    def pull(n: int) -> None:
        with quay.client(url) as client:
            for i in range(n):
                name = "demo/app-a" if i % 2 else "demo/app-b"
                ref = "1" if i == 0 else digests[name]  # one tag pull per round: resolved with a HEAD
                client.get_manifest(repos[name], ref)
                pulls.append((repos[name], digests[name]))

    def published() -> list[dict]:
        return [r for r in p.read(p.topics.manifest_pulled.name) if prefix in r["repository"]]

    pull(4)
    # layerfill's own pulls through Quay (its robot): dropped, or every fill would come back as an event.
    with RegistryClient(url, (quay.robot, quay.robot_token)) as robot:
        robot.get_manifest(repos["demo/app-b"], digests["demo/app-b"])
    p.read(p.topics.manifest_pulled.name, until=lambda rs: sum(prefix in r["repository"] for r in rs) >= 2, timeout=60)
    p.kill("quay-logs")  # SIGKILL mid-stream
    pull(3)
    quay.restart(service)
    pull(3)
    start_quay_logs(p, quay, source, first=False)
    pull(2)

    p.read(
        p.topics.manifest_pulled.name,
        until=lambda rs: sum(prefix in r["repository"] for r in rs) >= len(pulls),
        timeout=120,
    )
    time.sleep(3)  # anything published twice would show up by now
    records = published()
    ids = Counter(r["event_id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == [], "published more than once"
    assert len(records) == len(pulls)
    assert Counter((r["repository"], r["digest"]) for r in records) == Counter(pulls)
    assert {r["source"] for r in records} == {"quay"} and {r["registry"] for r in records} == {registry}
    assert sum(r["reference"] == "1" for r in records) == 4  # the tag pulls, resolved to the tag's digest

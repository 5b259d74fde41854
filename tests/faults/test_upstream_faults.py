"""Upstream faults against the real fetcher (a subprocess) with the fault proxy between it and the real upstream
registry: each fault alone, then all of them mixed at random over a run of images. Every image must end complete
(transient faults) or dead-lettered with the cause its fault implies (persistent ones), with nothing wrong or
half-written in the cache's storage and every output event committed exactly once (read_committed).

The numbers of each run go to .devstack/faults-results/upstream-*.json (for docs/reliability.md).
`LAYERFILL_FAULTS_SEED=<n>` replays a mixed run."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import full_run, scaled
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import Challenged, FaultProxy, PassThrough, Status
from tests.support.faultrun import (
    DrillConfig,
    DrillImage,
    Fault,
    KiB,
    MiB,
    check_image,
    observe,
    outcome_of,
    publish_all,
    push_drill_image,
    random_fault,
    summarize,
    wait_terminal,
    write_results,
)
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique

CFG = DrillConfig()
USER, PASSWORD = "drill", "drill-secret-8d1f"  # what the token endpoint of the "basic" proxy accepts

# proxy key -> how it authenticates: None (no auth), "anonymous" token auth, or token auth behind Basic credentials
PROXIES: dict[str, str | None] = {
    "plain": None,
    "anon": "anonymous",
    "basic": "basic",
    "token503": "anonymous",  # its token endpoint answers 503 twice
    "tokendown": "anonymous",  # its token endpoint answers 503 forever
}


@dataclass(frozen=True)
class Case:
    name: str
    fault: Fault
    proxy: str = "plain"  # a PROXIES key
    layer_size: int = 256 * KiB
    wrong_password: bool = False


ALONE = [
    # transient: a limited number of faulted requests, the image completes
    Case("500-transient", Fault("500", "layer", 7), layer_size=512 * KiB),  # > one request's retries
    Case("502-transient", Fault("502", "manifest", 3)),
    Case("503-transient", Fault("503", "config", 6)),
    Case("429-retry-after-transient", Fault("429", "layer", 3)),
    Case("reset-mid-body-transient", Fault("reset", "layer", 3), layer_size=6 * MiB),
    Case("truncated-body-transient", Fault("truncate", "layer", 3), layer_size=6 * MiB),
    Case("wrong-digest-body-transient", Fault("corrupt", "layer", 2), layer_size=6 * MiB),
    Case("slow-trickle-within-timeout", Fault("slow", "layer"), layer_size=512 * KiB),
    Case("stall-past-read-timeout-transient", Fault("stall", "layer", 2), layer_size=1 * MiB),
    Case("401-until-token-anonymous", Fault("auth"), proxy="anon"),
    Case("401-until-token-basic-credentials", Fault("auth"), proxy="basic"),
    Case("token-endpoint-503-transient", Fault("auth"), proxy="token503"),
    # persistent: every request faulted, the event is dead-lettered with the matching cause
    Case("500-persistent", Fault("500", "layer")),
    Case("502-persistent", Fault("502", "config")),
    Case("503-persistent-manifest", Fault("503", "manifest")),
    Case("429-persistent", Fault("429", "layer")),
    Case("reset-mid-body-persistent", Fault("reset", "layer"), layer_size=6 * MiB),
    Case("truncated-body-persistent", Fault("truncate", "layer"), layer_size=6 * MiB),  # one part up, then abort
    Case("wrong-digest-body-persistent", Fault("corrupt", "layer"), layer_size=6 * MiB),
    Case("wrong-digest-manifest-persistent", Fault("corrupt", "manifest")),
    Case("stall-past-read-timeout-persistent", Fault("stall", "layer"), layer_size=1 * MiB),
    Case("401-wrong-credentials", Fault("badcreds"), proxy="basic", wrong_password=True),
    Case("token-endpoint-503-persistent", Fault("tokendown"), proxy="tokendown"),
]
# Requests a persistent fault gets before the dead letter: one per fill attempt for a wrong body (its digest is
# only known at the end); a whole client retry sequence per attempt for error answers and broken bodies.
RETRY_SEQUENCE = 5  # RetryPolicy().max_attempts


def _persistent_hits(kind: str) -> int:
    return CFG.fill_attempts * (1 if kind == "corrupt" else RETRY_SEQUENCE)


@pytest.fixture(scope="module")
def results(devstack: DevStack) -> Iterator[dict[str, Any]]:
    """What the module's runs did; written as one JSON file per run for docs/reliability.md."""
    data: dict[str, Any] = {"suite": "upstream-faults", "full": full_run(), "config": asdict(CFG)}
    yield data
    path = write_results(devstack.ctx.paths.state / "faults-results", "upstream", data)
    print(f"\nupstream fault results: {path}")


def _route(devstack: DevStack, prefix: str, proxy: FaultProxy, auth: str | None, password: str = PASSWORD) -> dict:
    r = route(devstack, prefix, upstream_url=proxy.url)
    if auth == "basic":
        r.update(username=USER, password=password)
    return r


@pytest.fixture(scope="module")
def alone(devstack: DevStack, tmp_path_factory: pytest.TempPathFactory, results: dict[str, Any]):
    """All single-fault cases in one fetcher run (each image gets one fault; they run side by side)."""
    prefix = unique("uf")
    upstream = f"http://{devstack.upstream_registry}"
    proxies = {key: FaultProxy(upstream).start() for key in PROXIES}
    pipeline: Pipeline | None = None
    try:
        for key, auth in PROXIES.items():
            if auth is not None:
                proxies[key].require_token(*((USER, PASSWORD) if auth == "basic" else ()))
        token_rules = {
            "token503": proxies["token503"].add(Status(503), path="^/token$", times=2),
            "tokendown": proxies["tokendown"].add(Status(503), path="^/token$"),
        }
        routes = [_route(devstack, f"{prefix}/{key}", proxies[key], auth) for key, auth in PROXIES.items()]
        routes.append(_route(devstack, f"{prefix}/badcreds", proxies["basic"], "basic", password="wrong-password"))

        workdir = tmp_path_factory.mktemp("alone")
        images: list[DrillImage] = []
        for case in ALONE:
            where = "badcreds" if case.wrong_password else case.proxy
            repo = f"{prefix}/{where}/{case.name}"
            image, manifest_size, config_size = push_drill_image(
                devstack.upstream_registry, repo, workdir / case.name, case.layer_size
            )
            d = DrillImage(case.name, case.fault, image, manifest_size, config_size, proxies[case.proxy])
            d.arm(CFG)
            d.rule = token_rules.get(case.proxy, d.rule)
            images.append(d)

        pipeline = Pipeline(devstack, workdir / "pipeline", routes=routes, extra_env=CFG.env())
        pipeline.start("fetcher")
        publish_all(pipeline, devstack.proxy_registry, images)
        wait_terminal(pipeline, images, timeout=600, context="single faults")
        pipeline.stop("fetcher")  # graceful: nothing is in flight when the outputs are counted
        obs = observe(pipeline)
        storage = CacheStorage(devstack.settings().s3)
        results["alone"] = [outcome_of(d, obs) for d in images]
        yield {d.case: (d, check_image(d, obs, storage, CFG)) for d in images}
    finally:
        if pipeline is not None:
            pipeline.close()
        for fp in proxies.values():
            fp.close()


@pytest.mark.parametrize("case", ALONE, ids=[c.name for c in ALONE])
def test_upstream_fault_alone(alone: dict[str, tuple[DrillImage, list[str]]], case: Case) -> None:
    d, problems = alone[case.name]
    assert not problems, "\n".join(problems)
    fault = case.fault
    if fault.kind in ("auth", "badcreds", "tokendown"):
        repo_requests = d.proxy.requests(f"/v2/{d.repository}/")
        auth = d.proxy.auth
        assert auth is not None
        assert repo_requests and isinstance(repo_requests[0].action, Challenged)  # the first one had no token
        if fault.kind in ("badcreds", "tokendown"):
            assert all(isinstance(r.action, Challenged) for r in repo_requests)  # never got past the 401
        if fault.kind == "badcreds":
            assert auth.refused >= 1
        elif fault.kind == "tokendown":
            assert auth.issued == 0 and d.injected() == _persistent_hits("tokendown")
        else:
            assert any(isinstance(r.action, PassThrough) and r.status == 200 for r in repo_requests)
            assert f"repository:{d.repository}:pull" in auth.scopes
        if case.proxy == "token503":
            assert d.injected() == 2 and auth.issued >= 1
    elif fault.kind == "slow":
        assert d.injected() == 1  # trickled, within the read timeout: no retry needed
    elif fault.kind == "reset" and fault.persistent:
        # An RST can also hit before the headers are read (a retried request instead of a resumed body).
        assert d.injected() >= _persistent_hits("reset")
    elif fault.persistent:
        assert d.injected() == _persistent_hits(fault.kind)
    else:
        assert d.injected() == fault.times  # every faulted answer was used up, then the image completed


def test_mixed_upstream_faults_at_random(
    devstack: DevStack, pipeline_factory, tmp_path: Path, results: dict[str, Any]
) -> None:
    seed = int(os.environ.get("LAYERFILL_FAULTS_SEED") or random.randrange(1 << 32))
    print(f"mixed upstream faults: seed={seed} (LAYERFILL_FAULTS_SEED={seed} replays it)")
    rng = random.Random(seed)
    count = scaled(50, 200)
    prefix = unique("um")
    with FaultProxy(f"http://{devstack.upstream_registry}") as fp:
        # The whole run behind token auth whose tokens die long before the 300 s they announce: clients that
        # cache them meet a 401 now and then and must fetch a new one, mid-run, under every other fault.
        auth = fp.require_token(USER, PASSWORD, max_age_s=15)
        images: list[DrillImage] = []
        for i in range(count):
            fault = random_fault(rng, CFG, persistent_share=0.25, stall_persistent=full_run())
            size = rng.choice([64 * KiB, 256 * KiB, 1 * MiB]) if rng.random() > 0.1 else 6 * MiB
            image, manifest_size, config_size = push_drill_image(
                devstack.upstream_registry, f"{prefix}/i{i}", tmp_path / f"i{i}", size
            )
            d = DrillImage(f"mixed-{i}", fault, image, manifest_size, config_size, fp)
            d.arm(CFG)
            images.append(d)
        p = pipeline_factory(routes=[_route(devstack, prefix, fp, "basic")], extra_env=CFG.env())
        p.start("fetcher")
        publish_all(p, devstack.proxy_registry, images)
        wait_terminal(p, images, timeout=900, context=f"mixed run seed={seed}")
        p.stop("fetcher")
        obs = observe(p)
        storage = CacheStorage(devstack.settings().s3)
        problems = [problem for d in images for problem in check_image(d, obs, storage, CFG)]
        rows = [outcome_of(d, obs) for d in images]
        results["mixed"] = {
            "seed": seed,
            "images": count,
            "faults_injected": sum(r["injected"] for r in rows),
            "token_401s": auth.challenged,
            "tokens_issued": auth.issued,
            "outcomes": {o: sum(r["outcome"] == o for r in rows) for o in ("complete", "dead_lettered", "lost")},
            "by_fault": summarize(rows),
            "images_detail": rows,
        }
    assert not problems, f"seed={seed}: {len(problems)} problems\n" + "\n".join(problems)
    assert auth.challenged >= 1 and auth.issued >= 1  # the token dance happened
    assert any(d.fault.persistent for d in images) and any(not d.fault.persistent for d in images), f"seed={seed}"

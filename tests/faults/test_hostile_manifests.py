"""Hostile manifests (issue 9, "Hostile input"), served by the real upstream registry (pushed through its HTTP
API, or planted in its storage where the API refuses them) to a real fetcher: over 4 MiB, thousands of layers,
index loops, nesting and fan-out, and descriptors whose size is not what is served. Each ends in a dead letter
naming its cause or completes correctly; nothing wrong is stored; a valid image still completes afterwards.

What the real registry will not do is recorded too: distribution refuses to take (and to serve) a manifest over
4 MiB, so that one comes from a deliberately hostile upstream; and a content-addressed registry cannot hold an
index that lists itself (it would have to contain its own hash), so the loops are planted under a digest their
bytes do not hash to, which is the only way an upstream can serve one."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from layerfill.oci import mediatypes as mt
from tests.faults.conftest import full_run, scaled
from tests.support.cachestore import CacheStorage
from tests.support.hostile import (
    HostileUpstream,
    RegistryAPI,
    dead_letters,
    descriptor,
    image_index,
    image_manifest,
    oci_config,
    plant_manifest,
    sha256,
    write_results,
)
from tests.support.images import push_random_image
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique

MiB = 1024 * 1024
MANY_LAYERS = scaled(3_000, 5_000)
AMD64 = {"os": "linux", "architecture": "amd64"}


def _push_layers(registry: str, repository: str, blobs: list[bytes]) -> None:
    """Many small blobs, a few connections in parallel (one session per thread)."""
    local = threading.local()

    def push(data: bytes) -> None:
        if not hasattr(local, "api"):
            local.api = RegistryAPI(registry)
        local.api.blob(repository, data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(push, blobs))


class Cases:
    """Each hostile manifest: the event's repository and digest, and the outcome it must reach."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, repository: str, digest: str, outcome: str, cause: set[str] | None = None,
            message: str | None = None, **facts: Any) -> None:  # fmt: skip
        self.items.append({"name": name, "repository": repository, "digest": digest, "outcome": outcome,
                           "cause": cause or set(), "message": message, **facts})  # fmt: skip


def test_hostile_manifests_dead_letter_with_their_cause_or_complete_and_store_nothing_wrong(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("hm")
    api = RegistryAPI(devstack.upstream_registry)
    cases = Cases()
    config = oci_config(prefix)
    image_layer = os.urandom(4096)

    def base_image(repo: str) -> bytes:
        api.blob(repo, config)
        api.blob(repo, image_layer)
        return image_manifest(descriptor(mt.OCI_CONFIG, config), [descriptor(mt.OCI_LAYER_GZIP, image_layer)])

    # -- over 4 MiB --------------------------------------------------------------------------------------------
    big_repo = f"{prefix}/big"
    big_layers = [descriptor(mt.OCI_LAYER_GZIP, image_layer)]
    big = image_manifest(descriptor(mt.OCI_CONFIG, config), big_layers, annotations={"pad": "x" * (5 * MiB)})
    base_image(big_repo)
    refused = api.put_manifest(big_repo, sha256(big), big, mt.OCI_MANIFEST)
    assert refused.status_code == 400 and "too large" in refused.text, refused.text  # the real registry's own cap
    hostile = HostileUpstream()
    hostile_prefix = f"{prefix}/hostile"
    for declared in (True, False):
        repo = f"{hostile_prefix}/big-{'declared' if declared else 'chunked'}"
        d = hostile.serve_manifest(repo, big, mt.OCI_MANIFEST, declare_length=declared)
        how = "Content-Length" if declared else "chunked"
        cases.add(f"manifest over 4 MiB ({how}, hostile upstream)", repo, d, "dead_lettered", {"ManifestTooLarge"},
                  "larger than 4194304", size=len(big))  # fmt: skip

    # -- thousands of layers -------------------------------------------------------------------------------------
    many_repo = f"{prefix}/many"
    blobs = [uuid.uuid4().bytes + i.to_bytes(4, "big") for i in range(MANY_LAYERS)]
    started = time.monotonic()
    api.blob(many_repo, config)
    _push_layers(devstack.upstream_registry, many_repo, blobs)
    push_seconds = time.monotonic() - started
    many = image_manifest(descriptor(mt.OCI_CONFIG, config), [descriptor(mt.OCI_LAYER, b) for b in blobs])
    cases.add(f"{MANY_LAYERS} distinct layers", many_repo, api.manifest(many_repo, many, mt.OCI_MANIFEST),
              "complete", layers=MANY_LAYERS, manifest_bytes=len(many))  # fmt: skip
    over_repo = f"{prefix}/over-cap"
    base_image(over_repo)
    over = image_manifest(descriptor(mt.OCI_CONFIG, config), [descriptor(mt.OCI_LAYER_GZIP, image_layer)] * 10_001)
    cases.add("10,001 layer entries (cap 10,000)", over_repo, api.manifest(over_repo, over, mt.OCI_MANIFEST),
              "dead_lettered", {"ManifestTooLarge"}, "10001 entries exceeds the cap of 10000", manifest_bytes=len(over))  # fmt: skip

    # -- index loops, nesting, fan-out -----------------------------------------------------------------------------
    loop_repo = f"{prefix}/loops"
    child = base_image(loop_repo)
    api.manifest(loop_repo, child, mt.OCI_MANIFEST)
    # An index listing itself: planted under the digest it names, which its bytes cannot hash to.
    self_d = sha256(f"self-{prefix}".encode())
    plant_manifest(devstack, loop_repo, image_index([descriptor(mt.OCI_INDEX, self_d, 400)]), self_d)
    cases.add("index listing itself (served under its own digest)", loop_repo, self_d, "dead_lettered",
              {"DigestMismatch"}, "digest mismatch")  # fmt: skip
    # A -> B -> A: A is honest (pushed), B is planted under the digest A names, listing A.
    b_d = sha256(f"b-{prefix}".encode())
    a = image_index([descriptor(mt.OCI_INDEX, b_d, 300)])
    a_d = sha256(a)
    plant_manifest(devstack, loop_repo, a)  # the registry would refuse A: B is not a manifest it holds
    plant_manifest(devstack, loop_repo, image_index([descriptor(mt.OCI_INDEX, a_d, len(a))]), b_d)
    cases.add("index loop A -> B -> A", loop_repo, a_d, "dead_lettered", {"DigestMismatch"}, b_d)
    # Nested three indexes deep (the planner allows two).
    idx1 = image_index([descriptor(mt.OCI_MANIFEST, child, platform=AMD64)])
    api.manifest(loop_repo, idx1, mt.OCI_INDEX)
    i2 = api.manifest(loop_repo, idx2 := image_index([descriptor(mt.OCI_INDEX, idx1)]), mt.OCI_INDEX)
    i3 = api.manifest(loop_repo, image_index([descriptor(mt.OCI_INDEX, idx2)]), mt.OCI_INDEX)
    cases.add("indexes nested 3 deep", loop_repo, i3, "dead_lettered", {"PlanError"}, "nested 3 levels deep")
    cases.add("indexes nested 2 deep", loop_repo, i2, "complete", manifests=1)
    # One child listed 2,000 times, and a diamond (two indexes sharing one image).
    fan = image_index([descriptor(mt.OCI_MANIFEST, child, platform=AMD64)] * 2_000)
    cases.add("one child listed 2,000 times", loop_repo, api.manifest(loop_repo, fan, mt.OCI_INDEX), "complete",
              manifests=1)  # fmt: skip
    idx_l = image_index([descriptor(mt.OCI_MANIFEST, child, annotations={"side": "left"})])
    idx_r = image_index([descriptor(mt.OCI_MANIFEST, child, annotations={"side": "right"})])
    api.manifest(loop_repo, idx_l, mt.OCI_INDEX)
    api.manifest(loop_repo, idx_r, mt.OCI_INDEX)
    diamond = image_index([descriptor(mt.OCI_INDEX, idx_l), descriptor(mt.OCI_INDEX, idx_r)])
    cases.add("diamond: two indexes sharing an image", loop_repo, api.manifest(loop_repo, diamond, mt.OCI_INDEX),
              "complete", manifests=1)  # fmt: skip
    sizes = image_index([descriptor(mt.OCI_MANIFEST, child), descriptor(mt.OCI_MANIFEST, child, len(child) + 1)])
    planted_sizes = plant_manifest(devstack, loop_repo, sizes)
    cases.add("one child listed with two sizes", loop_repo, planted_sizes, "dead_lettered", {"PlanError"},
              "listed with sizes")  # fmt: skip

    # -- sizes that lie ---------------------------------------------------------------------------------------
    lies = f"{prefix}/lies"
    api.blob(lies, config)
    lying: dict[str, str] = {}
    for name, delta in (("larger", 1000), ("smaller", -1000)):
        data = os.urandom(64 * 1024)
        api.blob(lies, data)
        m = image_manifest(descriptor(mt.OCI_CONFIG, config), [descriptor(mt.OCI_LAYER, data, len(data) + delta)])
        lying[name] = sha256(data)
        cases.add(f"layer descriptor {delta:+d} bytes vs served", lies, api.manifest(lies, m, mt.OCI_MANIFEST),
                  "dead_lettered", {"DescriptorSizeMismatch"}, f"says {len(data) + delta} bytes but the upstream "
                  f"serves {len(data)}", layer=sha256(data))  # fmt: skip
    m = image_manifest(descriptor(mt.OCI_CONFIG, config, len(config) + 7), [])
    cases.add("config descriptor +7 bytes vs served", lies, api.manifest(lies, m, mt.OCI_MANIFEST), "dead_lettered",
              {"DescriptorSizeMismatch"}, f"says {len(config) + 7} bytes")  # fmt: skip
    lie_child = base_image(lies)
    api.manifest(lies, lie_child, mt.OCI_MANIFEST)
    m = image_index([descriptor(mt.OCI_MANIFEST, lie_child, len(lie_child) + 5)])
    cases.add("index child descriptor +5 bytes vs served", lies, api.manifest(lies, m, mt.OCI_INDEX), "dead_lettered",
              {"DescriptorSizeMismatch"}, f"manifest {sha256(lie_child)}: its descriptor says")  # fmt: skip
    api.close()

    # -- run them all through one fetcher ---------------------------------------------------------------------
    storage = CacheStorage(devstack.settings().s3)
    for d in lying.values():
        assert storage.size(d) is None  # random content: nobody stored it before
    with hostile:
        p: Pipeline = pipeline_factory(
            routes=[route(devstack, prefix), route(devstack, hostile_prefix, upstream_url=hostile.url)]
        )
        p.start("fetcher")
        started = time.monotonic()
        for c in cases.items:
            c["event"] = p.publish(registry=devstack.proxy_registry, repository=c["repository"], digest=c["digest"])
        digests = {c["digest"] for c in cases.items}
        n_dead = sum(c["outcome"] == "dead_lettered" for c in cases.items)
        n_done = len(cases.items) - n_dead

        cached = [r for r in p.read(p.topics.image_cached.name, timeout=900, until=lambda rs: len(
            [r for r in rs if r["digest"] in digests]) >= n_done) if r["digest"] in digests]  # fmt: skip
        dlq = dead_letters(p.read(p.topics.dlq.name, raw=True, timeout=600, until=lambda rs: len(rs) >= n_dead))
        drained = time.monotonic() - started
        layer_cached = p.read(p.topics.layer_cached.name)

        # Still serving: a valid image afterwards completes.
        good = push_random_image(devstack.upstream_registry, f"{prefix}/after", tmp_path / "good", 64 * 1024)
        p.publish(registry=devstack.proxy_registry, repository=good.repository, digest=good.digest)
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == good.digest for r in rs), timeout=120)
        assert p.procs["fetcher"].poll() is None

    # Each case: exactly one terminal record, the right one.
    assert len(dlq) == n_dead, [r["dlq"] for r in dlq]
    results = []
    for c in cases.items:
        done = [r for r in cached if r["digest"] == c["digest"] and r["repository"] == c["repository"]]
        dead = [r for r in dlq if r["key"] == f"{devstack.proxy_registry}/{c['repository']}".encode()
                and c["digest"].encode() in r["value"]]  # fmt: skip
        row = {"case": c["name"], "expected": c["outcome"]}
        if c["outcome"] == "complete":
            assert len(done) == 1 and not dead, (c["name"], dead)
            row["outcome"] = "complete"
            image = done[0]
            if "layers" in c:
                (m,) = image["manifests"]
                assert len(m["layers"]) == c["layers"]
                row["layers"] = len(m["layers"])
            if "manifests" in c:
                assert len(image["manifests"]) == c["manifests"], image["manifests"]
                row["image_manifests"] = len(image["manifests"])
        else:
            assert len(dead) == 1 and not done, (c["name"], done, [r["dlq"] for r in dlq])
            h = dead[0]["dlq"]
            assert h["error.class"] in c["cause"], (c["name"], h)
            assert c["message"] in h["error.message"], (c["name"], h)
            if h["error.class"] != "DigestMismatch":  # wrong bytes may be a passing fault: retried; the rest is not
                assert h["attempts"] == "1", (c["name"], h)
            row.update(outcome="dead_lettered", cause=h["error.class"], message=h["error.message"][:200],
                       attempts=int(h["attempts"]))  # fmt: skip
        results.append(row)

    # Storage: nothing under a lying descriptor, nothing half-written, every one of the many layers whole.
    for d in lying.values():
        assert storage.size(d) is None
        assert storage.layer_link(lies, d) is None
        assert storage.uploads_in_progress(d) == []
    many_sizes = Counter(storage.size(sha256(b)) for b in blobs)
    assert many_sizes == {20: MANY_LAYERS}, many_sizes
    for b in blobs[:: max(1, MANY_LAYERS // 50)]:
        assert storage.rehash(sha256(b)) == (sha256(b), 20)
        assert storage.layer_link(many_repo, sha256(b)) == sha256(b)
    for how in ("declared", "chunked"):
        assert storage.manifest_link(f"{hostile_prefix}/big-{how}", sha256(big)) is None
    many_layer_events = [r for r in layer_cached if r["repository"] == many_repo]
    assert len(many_layer_events) == MANY_LAYERS + 1  # each layer and the config, once

    path = write_results(
        devstack,
        "hostile-manifests",
        {"cases": results, "many_layers": MANY_LAYERS, "many_layers_push_seconds": round(push_seconds, 1),
         "seconds_to_terminal": round(drained, 1), "full_run": full_run()},
    )  # fmt: skip
    print(json.dumps(results, indent=1), path)

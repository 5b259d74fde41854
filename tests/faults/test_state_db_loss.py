"""The fetcher's SQLite state DB deleted between two runs over the same events: the second run (the group moved
back to the earliest offsets with `layerfill replay`) rebuilds the state from what storage holds and downloads
no blob again, counted at a pass-through proxy in front of the upstream.

What run 2 may ask the upstream: no manifest and no blob. The fill reads each root manifest from the cache
(the proxy stored it), finds every blob in storage, and only the discovery of supply-chain artifacts (whose
last check was recorded in the lost state DB) asks the upstream again: HEADs of the referrers tag schema and
cosign tags, GETs of the referrers API.

Output: each run consumes every event once and emits one ImageCached per image (the state DB, which made a
replay emit nothing, is gone, and the image is complete: downstream consumers are told again). Run 2's items
are all `present` with no byte fetched. Once run 2 has rebuilt the state, events for the same images emit
nothing and ask the upstream nothing."""

from __future__ import annotations

import random
from pathlib import Path

from tests.faults.conftest import scaled
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import FaultProxy, is_referrer_lookup
from tests.support.infrafaults import (
    EventSender,
    KiB,
    MiB,
    check_outputs,
    check_storage,
    observe,
    push_images,
    wait_all_committed,
    wait_terminal,
    write_results,
)
from tests.support.ops_cli import run_json
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique


def _image_cached_count(p: Pipeline) -> int:
    return len(p.read(p.topics.image_cached.name))


def test_state_db_deleted_between_runs_rebuilds_from_storage(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    n = scaled(8, 20)
    rng = random.Random(9004)
    prefix = unique("stdb")
    images = push_images(devstack, prefix, tmp_path, [rng.randint(256 * KiB, 2 * MiB) for _ in range(n)])
    storage = CacheStorage(devstack.settings().s3)

    with FaultProxy(f"http://{devstack.upstream_registry}") as upstream:  # pass-through: it only counts
        p = pipeline_factory(routes=[route(devstack, prefix, upstream_url=upstream.url)], state="sqlite")
        db = Path(p.state_url.removeprefix("sqlite:///"))

        # Run 1: every image filled from the upstream.
        p.start("fetcher")
        sender = EventSender(p, devstack.proxy_registry)
        try:
            for im in images:
                sender.send(im)
        finally:
            sender.close()
        sent = sender.sent
        run1 = wait_terminal(p, [s.event_id for s in sent], timeout=180)
        wait_all_committed(p)
        p.stop("fetcher")
        run1_blob_gets = upstream.count("/blobs/", "GET")
        run1_manifest_gets = upstream.count("/manifests/", "GET")
        mark = len(upstream.requests())

        # The state DB is lost (with SQLite's side files); the group goes back to the first event.
        assert db.exists()
        for f in (
            db,
            db.with_name(db.name + "-wal"),
            db.with_name(db.name + "-shm"),
            db.with_name(db.name + "-journal"),
        ):
            f.unlink(missing_ok=True)
        moved = run_json(p, "replay", "--to-earliest", "--execute")
        replayed = sum(m["delta"] or 0 for m in moved["partitions"])
        assert moved["applied"] is True and replayed == n, moved

        # Run 2: the same events again, with no state.
        p.start("fetcher")
        p.read(p.topics.image_cached.name, until=lambda rs: len(rs) >= 2 * n, timeout=180)
        wait_all_committed(p)
        run2_requests = upstream.requests()[mark:]
        run2 = observe(p)

        # Run 3: the same images pulled again; the rebuilt state answers.
        mark3 = len(upstream.requests())
        sender3 = EventSender(p, devstack.proxy_registry)
        try:
            for im in images:
                sender3.send(im)
        finally:
            sender3.close()
        wait_all_committed(p)
        run3_requests = upstream.requests()[mark3:]
        run3_image_cached = _image_cached_count(p)

    run2_blob_gets = [r for r in run2_requests if "/blobs/" in r.path and r.method == "GET"]
    run2_manifest_gets = [r for r in run2_requests if "/manifests/" in r.path and r.method == "GET"]
    problems = check_outputs(sent, run1) + check_storage(images, storage)
    # Run 2 per event: a second ImageCached for the same image, and every item found present.
    for s in sent:
        ic = run2.image_cached.get(s.event_id, [])
        second = [r for r in run2.layer_cached.get(s.event_id, []) if r["outcome"] != "fetched"]
        if len(ic) != 2:
            problems.append(f"{s.image.repository}: {len(ic)} ImageCached after both runs, expected 2")
        elif sorted(r["fetched_bytes"] for r in ic)[0] != 0:
            problems.append(f"{s.image.repository}: run 2 fetched bytes: {[r['fetched_bytes'] for r in ic]}")
        if sorted((r["digest"], r["outcome"], r["bytes_fetched"]) for r in second) != sorted(
            [(s.image.config_digest, "present", 0), (s.image.layer_digest, "present", 0)]
        ):
            problems.append(f"{s.image.repository}: run 2 items {second}")
    if run2.dead or run2.retries:
        problems.append(f"run 2 dead-lettered {len(run2.dead)} and retried {run2.retries} events")

    result = {
        "fault": "state DB (SQLite) deleted between two runs over the same events",
        "images": n,
        "events_replayed": replayed,
        "run1_upstream_blob_gets": run1_blob_gets,
        "run1_upstream_manifest_gets": run1_manifest_gets,
        "run2_upstream_requests": len(run2_requests),
        "run2_upstream_blob_gets": len(run2_blob_gets),
        "run2_upstream_manifest_gets": len(run2_manifest_gets),
        "run2_image_cached": sum(len(v) for v in run2.image_cached.values()) - n,
        "run3_upstream_requests": len(run3_requests),
        "run3_image_cached": run3_image_cached - 2 * n,
        "problems": problems,
    }
    write_results(devstack, "state-db-loss", result)
    assert not problems, "\n".join(problems)
    assert run1_blob_gets >= 2 * n  # run 1 really downloaded every config and layer
    assert run2_blob_gets == [], [r.path for r in run2_blob_gets]
    assert run2_manifest_gets == [], [r.path for r in run2_manifest_gets]  # read from the cache
    assert [f"{r.method} {r.path}" for r in run2_requests if not is_referrer_lookup(r)] == []
    assert run3_requests == [] and run3_image_cached == 2 * n

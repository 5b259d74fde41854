"""Three fetchers in one consumer group under a steady stream of images; one of them, chosen at random, is killed
with SIGKILL at a random moment again and again (each time a replacement with the same instance id starts, as a
StatefulSet would restart it, and fences the dead one's open transaction), then all three are stopped and
started. Every event ends with exactly one committed ImageCached (read_committed) and one LayerCached per blob,
nothing is dead-lettered, nothing partial is visible in storage and no multipart upload is left open.

Static membership (group.instance.id) is not used, so a killed member's partitions move only after the session
timeout: the drill sets session.timeout.ms to the broker's minimum (6 s) through LAYERFILL_KAFKA__EXTRA.
`LAYERFILL_FAULTS_FULL=1` kills 20 times; CI kills fewer."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path

from tests.faults.conftest import scaled
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import FaultProxy, Slow
from tests.support.images import PushedImage
from tests.support.infrafaults import (
    EventSender,
    KiB,
    MiB,
    check_outputs,
    check_storage,
    outcome_counts,
    push_images,
    wait_all_committed,
    wait_terminal,
    write_results,
)
from tests.support.routes import route
from tests.support.stack import DevStack, unique

SEED = 9003
MEMBERS = ("f0", "f1", "f2")
PUBLISH_INTERVAL_S = 0.7
KAFKA_EXTRA = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}


def _stream(sender: EventSender, images: list[PushedImage], stop: threading.Event, errors: list[BaseException]) -> None:
    """The steady stream: one event every PUBLISH_INTERVAL_S, whatever the fetchers are going through."""
    try:
        for im in images:
            if stop.is_set():
                return
            sender.send(im)
            time.sleep(PUBLISH_INTERVAL_S)
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


def test_fetchers_killed_at_random_then_all_restarted(devstack: DevStack, pipeline_factory, tmp_path: Path) -> None:
    kills = scaled(6, 20)
    rng = random.Random(SEED)
    n_stream = scaled(45, 130)  # enough for the kill phase at PUBLISH_INTERVAL_S
    n_tail = scaled(6, 12)  # published after all three restarted
    prefix = unique("kills")
    # Up to 7 MiB: the larger layers go up as multipart uploads (5 MiB parts) that a kill may cut off.
    sizes = [
        rng.choice([rng.randint(64 * KiB, 2 * MiB), rng.randint(5 * MiB, 7 * MiB)]) for _ in range(n_stream + n_tail)
    ]
    images = push_images(devstack, prefix, tmp_path, sizes)
    stream, tail = images[:n_stream], images[n_stream:]
    storage = CacheStorage(devstack.settings().s3)
    env = {
        "LAYERFILL_KAFKA__EXTRA": json.dumps(KAFKA_EXTRA),
        "LAYERFILL_FETCHER__PART_BYTES": str(5 * MiB),
        "LAYERFILL_FETCHER__MAX_INFLIGHT_IMAGES": "4",
    }

    kill_log: list[dict[str, object]] = []
    with FaultProxy(f"http://{devstack.upstream_registry}") as upstream:
        # ~1-2 s per layer: a kill at a random moment often lands in a download or an upload.
        upstream.add(Slow(bytes_per_s=4 * MiB), path="/blobs/", method="GET")
        p = pipeline_factory(routes=[route(devstack, prefix, upstream_url=upstream.url)], partitions=6, extra_env=env)
        for name in MEMBERS:
            p.start("fetcher", name=name)
        sender = EventSender(p, devstack.proxy_registry)
        stop, errors = threading.Event(), []
        publisher = threading.Thread(target=_stream, args=(sender, stream, stop, errors), daemon=True)
        publisher.start()
        try:
            for i in range(kills):
                time.sleep(rng.uniform(0.5, 6.0))
                victim = rng.choice(MEMBERS)
                in_flight = len([r for r in upstream.requests("/blobs/", "GET") if not r.done])
                p.kill(victim)
                kill_log.append({"kill": i + 1, "member": victim, "blob_downloads_in_flight": in_flight,
                                 "published_so_far": len(sender.sent)})  # fmt: skip
                p.start("fetcher", name=victim)  # the replacement: same instance id, so same transactional.id
            publisher.join(timeout=PUBLISH_INTERVAL_S * n_stream + 120)
            assert not errors, errors
            assert not publisher.is_alive(), "the event stream did not finish"

            # All three stopped (gracefully) and started again; more events after that.
            for name in MEMBERS:
                assert p.stop(name, signal.SIGTERM) == 0, f"{name} did not stop cleanly\n{p.log(name)}"
            for name in MEMBERS:
                p.start("fetcher", name=name)
            for im in tail:
                sender.send(im)
        finally:
            stop.set()
            sender.close()

        sent = sender.sent
        obs = wait_terminal(p, [s.event_id for s in sent], timeout=300, names=MEMBERS)
        wait_all_committed(p)
        for name in MEMBERS:
            assert p.procs[name].poll() is None, f"{name} exited\n{p.log(name)}"
        blob_gets = upstream.count("/blobs/", "GET")

    problems = check_outputs(sent, obs) + check_storage(images, storage)
    if obs.dead:
        problems.append(f"{len(obs.dead)} events dead-lettered")
    logs = "".join((p.workdir / f"{m}.log").read_text(errors="replace") for m in MEMBERS)
    result = {
        "fault": "3 fetchers in one group, one SIGKILLed at random (replacement started each time), then all restarted",
        "seed": SEED,
        "kills": kills,
        "kills_with_blob_downloads_in_flight": sum(1 for k in kill_log if k["blob_downloads_in_flight"]),
        "images": len(sent),
        "images_after_full_restart": len(tail),
        "multipart_layers": sum(1 for s in sizes if s > 5 * MiB),
        "upstream_blob_gets": blob_gets,
        "blob_gets_beyond_one_per_blob": blob_gets - 2 * len(sent),
        "aborted_transactions": logs.count("transaction aborted"),
        "stale_uploads_aborted": logs.count("aborted a stale multipart upload"),
        "retry_records": obs.retries,
        "outcomes": outcome_counts(sent, obs),
        "kill_log": kill_log,
        "problems": problems,
    }
    write_results(devstack, "fetcher-kills", result)
    assert not problems, "\n".join(problems)
    assert len(sent) == n_stream + n_tail

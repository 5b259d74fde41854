"""The Kafka broker restarted in the middle of a run (fills in flight, their transactions about to commit): the
fetcher rides it out (restarted at most once, see below), and every event published before and after the restart ends with exactly
one committed ImageCached (read_committed), nothing dead-lettered, nothing wrong or partial in storage.

The devstack's schema registry (Apicurio, in-memory H2) does not keep its state in Kafka, and layerfill encodes
events without it here, so the broker alone is restarted.

librdkafka may block in a transaction call for ever once the coordinator's broker restarted (librdkafka#5456); the
loop's watchdog then exits the fetcher with EXIT_STUCK after two transaction timeouts so that it is restarted.
This drill restarts it, as its supervisor would, and requires that to happen at most once (no crash loop); the
transaction timeout is shortened to 20 s through LAYERFILL_KAFKA__EXTRA to keep the drill short."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import requests

from layerfill.kafka.txloop import EXIT_STUCK
from tests.faults.conftest import scaled
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import FaultProxy, Slow
from tests.support.infrafaults import (
    EventSender,
    MiB,
    Observed,
    check_outputs,
    check_storage,
    observe,
    outcome_counts,
    push_images,
    wait_all_committed,
    write_results,
)
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique

DOWN_S = 10  # broker stopped this long (plus its shutdown and start-up)
TX_TIMEOUT_MS = 20_000  # the watchdog: 40 s, past the whole outage


def _supervise_until_terminal(p: Pipeline, event_ids: set[str], timeout: float) -> tuple[Observed, list[int]]:
    """Waits for every event's terminal record, restarting the fetcher when it exits (its exit codes)."""
    exits: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        code = p.procs["fetcher"].poll()
        if code is not None:
            exits.append(code)
            assert code == EXIT_STUCK and len(exits) <= 1, f"fetcher exits {exits}\n{p.log('fetcher')}"
            p.start("fetcher")
        obs = observe(p)
        missing = event_ids - obs.terminal()
        if not missing:
            return obs, exits
        assert time.monotonic() < deadline, f"{len(missing)} events without a terminal record\n{p.log('fetcher')}"
        time.sleep(2)


def test_kafka_broker_restarted_during_a_run(devstack: DevStack, pipeline_factory, tmp_path: Path) -> None:
    n = scaled(16, 40)
    rng = random.Random(9002)
    prefix = unique("kafrs")
    images = push_images(devstack, prefix, tmp_path, [rng.randint(1 * MiB, 3 * MiB) for _ in range(n)])
    before, after = images[: n // 2], images[n // 2 :]
    storage = CacheStorage(devstack.settings().s3)

    with FaultProxy(f"http://{devstack.upstream_registry}") as upstream:
        # Layers trickle (~1 s each) so that fills, and their transactions, are in flight when the broker goes.
        upstream.add(Slow(bytes_per_s=2 * MiB), path="/blobs/", method="GET")
        env = {"LAYERFILL_KAFKA__EXTRA": json.dumps({"transaction.timeout.ms": str(TX_TIMEOUT_MS)})}
        p = pipeline_factory(routes=[route(devstack, prefix, upstream_url=upstream.url)], extra_env=env)
        p.start("fetcher")
        sender = EventSender(p, devstack.proxy_registry)
        try:
            for im in before:
                sender.send(im)
            # Under way: layers downloading, so their transactions come while the broker is down or restarting.
            deadline = time.monotonic() + 120
            while not (
                in_flight := len([r for r in upstream.requests("/blobs/", "GET") if not r.done and r.body_bytes])
            ):
                assert time.monotonic() < deadline, f"no download got going\n{p.log('fetcher')}"
                time.sleep(0.05)
            done_before = len(p.read(p.topics.image_cached.name))

            devstack.stack.stop("kafka")
            try:
                time.sleep(DOWN_S)
            finally:
                devstack.stack.start("kafka")
            restarted_at = time.monotonic()
            for im in after:  # the run goes on after the restart
                sender.send(im)
        finally:
            sender.close()

        sent = sender.sent
        obs, exits = _supervise_until_terminal(p, {s.event_id for s in sent}, timeout=300)
        wait_all_committed(p)
        settle_s = time.monotonic() - restarted_at
        fetcher = p.procs["fetcher"]
        assert fetcher.poll() is None, f"the fetcher exited ({fetcher.returncode})\n{p.log('fetcher')}"
        health = requests.get(f"http://127.0.0.1:{p.health_ports['fetcher']}/healthz", timeout=5).status_code

    log = (p.workdir / "fetcher.log").read_text(errors="replace")
    problems = check_outputs(sent, obs) + check_storage(images, storage)
    result = {
        "fault": f"Kafka broker stopped for {DOWN_S} s (plus shutdown and start-up) during a run, then started",
        "images": n,
        "published_before_restart": len(before),
        "published_after_restart": len(after),
        "images_complete_before_stop": done_before,
        "layer_downloads_in_flight_at_stop": in_flight,
        "aborted_transactions": log.count("transaction aborted"),
        "fetcher_exits_by_stuck_transaction_watchdog": len(exits),
        "seconds_to_all_terminal_after_restart": round(settle_s, 1),
        "retry_records": obs.retries,
        "outcomes": outcome_counts(sent, obs),
        "problems": problems,
    }
    write_results(devstack, "kafka-restart", result)
    assert not problems, "\n".join(problems)
    assert health == 200

"""Benchmark 1, the firehose: N ManifestPulled events (default 200,000) for images that are already complete.

The fetcher's throughput is compared with two bare confluent-kafka consumers of the same topic, in the same run,
interleaved: one that consumes and decodes each record, one that only consumes (the floor no consumer beats), then
the fetcher, and so on, ending with the bare pair (the machine is shared, so every fetcher round has bare rounds on
both sides); medians are reported. Records carry the producers' headers (the fetcher triages repeats from them
without decoding); `--no-digest-header` writes them as older producers did, so the fetcher must decode each.

    .venv/bin/python -m bench.firehose [--events 200000] [--no-digest-header]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path

import psutil
from confluent_kafka import Consumer

from bench import common
from layerfill.devstack.seed import seed
from layerfill.kafka.txloop import FETCH_QUEUE_BACKOFF_MS
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, ensure_up

SMALL = 8 * 1024 * 1024  # the catalog size the e2e tests build, so it is usually cached
IMAGES = ["demo/app-a:1", "demo/app-b:1", "demo/multi:1"]


def bare_consume(
    bootstrap: str, topic: str, total: int, timeout: float = 600, *, decode: bool = True
) -> dict[str, float]:
    """Consume (and decode) `total` records from the start of `topic`; the rate excludes the group join."""
    codec = common.devstack_codec()
    # The fetcher's fetch settings: librdkafka's default fetch.queue.backoff.ms (1 s) stalls a consumer that drains
    # its prefetched queue quickly (this loop as much as the fetcher), so the bare loops run with the fetcher's.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-bare-{uuid.uuid4().hex[:8]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest",
                  "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS})  # fmt: skip
    c.subscribe([topic])
    n, first, t0 = 0, 0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while n < total and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                if m.error():
                    continue
                if decode:
                    codec.decode(m.value())
                if not t0:
                    t0 = time.monotonic()
                    first = n + 1
                n += 1
        secs = time.monotonic() - t0
    finally:
        c.close()
    if n < total:
        raise TimeoutError(f"bare consumer read {n} of {total}")
    return {"events_per_s": round((n - first) / secs, 1), "seconds": round(secs, 2)}


def warm_up(p: Pipeline, images: list[tuple[str, str, str]]) -> None:
    """Fill every image once, so the measured events all find their image complete."""
    p.start("fetcher")
    common.produce_pulls(p.settings.kafka.bootstrap_servers, p.topics.manifest_pulled.name, images, len(images))
    digests = {d for _, _, d in images}
    p.read(p.topics.image_cached.name, until=lambda rs: {r["digest"] for r in rs} >= digests, timeout=180)
    p.stop("fetcher")


def fetcher_round(p: Pipeline, group: str, total: int, profile: Path | None) -> dict:
    """One fetcher process, in consumer group `group`, through `total` events; its rate excludes the group
    join (timed from the first counted batch to the last)."""
    proc = common.start_fetcher(p, profile=profile, env={"LAYERFILL_FETCHER__GROUP_ID": group})
    port = p.health_ports["fetcher"]
    ps = psutil.Process(proc.pid)
    cpu0 = sum(ps.cpu_times()[:2])
    with common.PeakRss(proc.pid) as rss:
        samples = common.wait_events(port, total, timeout=900, interval=0.02)
    cpu = sum(ps.cpu_times()[:2]) - cpu0
    rate, secs = common.steady_rate(samples, 0, total)
    outcomes = common.fetcher_events(port)
    p.stop("fetcher")
    if profile is not None:
        common.print_profile(profile)
    print(f"fetcher: {rate:.0f} events/s over {secs:.2f}s; outcomes {outcomes}")
    return {"events_per_s": round(rate, 1), "seconds": round(secs, 2), "outcomes": outcomes,
            "cpu_seconds": round(cpu, 2), "peak_rss_mib": round(rss.peak / 2**20, 1),
            # (seconds since the first counted event, events counted): the ramp a new process goes through.
            "samples": [(round(t - samples[0][0], 3), int(n)) for t, n in samples if n]}  # fmt: skip


def run(devstack: DevStack, count: int, partitions: int, rounds: int, profile: Path | None = None,
        digest_header: bool = True) -> dict:  # fmt: skip
    prefix = common.run_id("benchfh")
    pushed = seed(devstack.ctx, large_size=SMALL, prefix=prefix, names=IMAGES)
    images = [(devstack.proxy_registry, ref.rsplit(":", 1)[0], digest) for ref, digest in pushed.items()]
    wd = common.workdir(prefix)
    p = Pipeline(
        devstack, wd, partitions=partitions, routes=[common.route(devstack, prefix)], state="sqlite"
    )  # as docs/benchmarks.md measured
    bare: list[dict] = []
    raw: list[dict] = []  # bare consumer without decoding
    fetcher: list[dict] = []
    try:
        warm_up(p, images)
        bootstrap, topic = p.settings.kafka.bootstrap_servers, p.topics.manifest_pulled.name
        produce_s = common.produce_pulls(bootstrap, topic, images, count, digest_header=digest_header)
        print(f"produced {count} events in {produce_s:.1f}s")
        total = count + len(images)  # the warm-up events are read again by every new group

        def bare_pair() -> None:
            bare.append(bare_consume(bootstrap, topic, total))
            raw.append(bare_consume(bootstrap, topic, total, decode=False))
            print(f"bare consumer: {bare[-1]['events_per_s']:.0f} events/s decoding, "
                  f"{raw[-1]['events_per_s']:.0f} without decoding")  # fmt: skip

        # Interleaved (bare pair, fetcher, ..., bare pair) so each fetcher round has bare rounds on both sides.
        for i in range(rounds):
            bare_pair()
            fetcher.append(fetcher_round(p, f"{p.id}-fetcher-{i}", total, profile if i == 0 else None))
        bare_pair()
    finally:
        p.close()
        common.remove(wd)
    bare_rate = statistics.median(b["events_per_s"] for b in bare)
    raw_rate = statistics.median(b["events_per_s"] for b in raw)
    fetcher_rate = statistics.median(f["events_per_s"] for f in fetcher)
    return {
        "events": count,
        "digest_header": digest_header,
        "partitions": partitions,
        "images": len(images),
        "produce_seconds": round(produce_s, 2),
        "bare_consumer_rounds": bare,
        "fetcher_rounds": fetcher,
        "bare_no_decode_rounds": raw,
        "bare_events_per_s_median": round(bare_rate, 1),
        "bare_no_decode_events_per_s_median": round(raw_rate, 1),
        "fetcher_events_per_s_median": round(fetcher_rate, 1),
        "ratio_fetcher_to_bare": common.ratio(fetcher_rate, bare_rate),
        "ratio_fetcher_to_bare_no_decode": common.ratio(fetcher_rate, raw_rate),
        "ratio_per_round": [
            common.ratio(f["events_per_s"], (bare[i]["events_per_s"] + bare[i + 1]["events_per_s"]) / 2)
            for i, f in enumerate(fetcher)
        ],
        "profiled": profile is not None,
        "targets": {"ratio_to_bare": 1.0, "events_per_s": 20000},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--name", default="firehose", help="results file name under bench/results/")
    ap.add_argument("--rounds", type=int, default=3, help="fetcher rounds, each between two bare rounds")
    ap.add_argument("--profile", type=Path, help="run the fetcher under cProfile, write its stats here and print them")
    ap.add_argument("--no-digest-header", action="store_true", help="records as older producers wrote them")
    args = ap.parse_args()
    with common.e2e_lock():
        result = run(ensure_up(), args.events, args.partitions, args.rounds, args.profile, not args.no_digest_header)
    print(f"fetcher/bare = {result['ratio_fetcher_to_bare']}  ({result['fetcher_events_per_s_median']:.0f} vs "
          f"{result['bare_events_per_s_median']:.0f} events/s, medians); fetcher/bare without decoding = "
          f"{result['ratio_fetcher_to_bare_no_decode']} ({result['bare_no_decode_events_per_s_median']:.0f})")  # fmt: skip
    common.write_result(args.name, result)


if __name__ == "__main__":
    main()

"""The firehose's own cost without Kafka: the real FetcherService and TransactionalLoop over records held in
memory (the Kafka clients are the unit tests' fakes), against decoding the same records. Every record is a
repeat pull of an image the fetcher knows complete, written as the producers write it (with the digest header),
so this is the per-event Python work of the steady state that bench/firehose.py measures through a broker.

    .venv/bin/python -m bench.firehose_loop [--events 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Message

from bench import common
from layerfill.config.settings import KafkaSettings, Settings
from layerfill.consumers.fetcher.service import FetcherService
from layerfill.kafka.keys import image_fingerprint, image_key
from layerfill.producers.publisher import build_event, manifest_pulled_record
from layerfill.serde.codec import EventCodec
from tests.unit.test_txloop_batching import FakeConsumer, FakeProducer

REGISTRY, REPO = "cache.bench:5000", "team/app"


def best_us(fn: Callable[[], None], n: int, repeat: int = 3) -> float:
    """The best of `repeat` runs, in microseconds per record."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def run(events: int, workdir: Path) -> dict[str, float]:
    codec = EventCodec()
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"log_level": "0"}),
        fetcher={"health_port": None},
        state={"database_url": f"sqlite:///{workdir / 'state.db'}"},
        routes=[{"registry": REGISTRY, "upstream_url": "http://127.0.0.1:1", "referrers": {"follow": []}}],
    )
    svc = FetcherService(settings, codec=codec)
    svc.loop.producer, svc.loop.consumer = FakeProducer(), FakeConsumer()  # type: ignore[assignment]
    digests = ["sha256:" + c * 64 for c in "abc"]
    recs = [manifest_pulled_record(codec, "pulled", build_event(registry=REGISTRY, repository=REPO, digest=d,
                                                                source="distribution")) for d in digests]  # fmt: skip
    for d in digests:  # what the first (decoded) repeat of each image leaves behind
        svc.known_complete[image_fingerprint(image_key(REGISTRY, REPO, d))] = float("inf")
    msgs = [Message(topic="pulled", partition=i % 2, offset=i, key=recs[i % 3].key, value=recs[i % 3].value,
                    headers=list(recs[i % 3].headers)) for i in range(events)]  # fmt: skip

    def fetcher() -> None:
        for i in range(0, events, 500):
            svc.loop.process_batch(msgs[i : i + 500])

    def decode() -> None:
        for m in msgs:
            codec.decode(m.value())

    try:
        loop_us, decode_us = best_us(fetcher, events), best_us(decode, events)
    finally:
        svc.pool.shutdown()
        svc.close()
        svc.state.close()
    return {"events": events, "fetcher_us_per_event": round(loop_us, 2), "decode_us_per_event": round(decode_us, 2),
            "ratio_fetcher_to_decode": common.ratio(loop_us, decode_us)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.events, Path(tmp))
    print(f"fetcher loop + stage: {result['fetcher_us_per_event']} us per repeat; decode alone: "
          f"{result['decode_us_per_event']} us per record (ratio {result['ratio_fetcher_to_decode']})")  # fmt: skip
    common.write_result("firehose_loop", result)


if __name__ == "__main__":
    main()

"""What librdkafka tells about itself, made visible the way the rest of layerfill is: its log lines through Python
logging (so no raw ``%3|...|FAIL|`` line reaches the JSON log stream) and a few of its statistics as Prometheus
metrics (``statistics.interval.ms`` + ``stats_cb``).

librdkafka hands both over only from inside ``poll``/``consume``/``flush`` of the client, on the caller's thread:
a client nobody polls holds its log lines back rather than printing them raw.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LIBRDKAFKA_LOGGER = "layerfill.kafka.librdkafka"
log = logging.getLogger(__name__)


def librdkafka_logger() -> logging.Logger:
    """The logger every client's ``logger`` setting names: librdkafka's lines arrive as its records."""
    return logging.getLogger(LIBRDKAFKA_LOGGER)


class KafkaStatsCollector(Collector):
    """The newest statistics of each observed client, by role (``fetcher-consumer``, ``bridge-producer``...),
    exported at scrape time. One client per role and process; a second one of a role replaces the first's figures."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def callback(self, role: str) -> Callable[[str], None]:
        def on_stats(stats_json: str) -> None:
            try:
                stats = json.loads(stats_json)
            except ValueError:
                log.warning("librdkafka statistics are not JSON; ignored", extra={"role": role})
                return
            with self._lock:
                self._latest[role] = stats

        return on_stats

    def forget(self, role: str) -> None:
        with self._lock:
            self._latest.pop(role, None)

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        # The names exist before the first statistics arrive (and for tests that list exported metrics).
        return self._families({})

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        with self._lock:
            latest = dict(self._latest)
        return self._families(latest)

    @staticmethod
    def _families(latest: dict[str, dict[str, Any]]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        tx = CounterMetricFamily(
            "layerfill_kafka_transmitted_bytes", "Bytes sent to Kafka brokers by the client", labels=["role"]
        )
        rx = CounterMetricFamily(
            "layerfill_kafka_received_bytes", "Bytes received from Kafka brokers by the client", labels=["role"]
        )
        rtt = GaugeMetricFamily(
            "layerfill_kafka_broker_rtt_seconds",
            "Average request round-trip time to each broker over the last statistics interval (a consumer's includes"
            " the broker's fetch wait, fetch.wait.max.ms: compare producers' for the network and the broker)",
            labels=["role", "broker"],
        )
        lag = GaugeMetricFamily(
            "layerfill_kafka_consumer_lag_messages",
            "Messages between the consumer's committed/consumed offset and the partition end, per partition",
            labels=["role", "topic", "partition"],
        )
        queued = GaugeMetricFamily(
            "layerfill_kafka_producer_queue_messages",
            "Messages waiting in the producer's queue for delivery",
            labels=["role"],
        )
        for role, stats in sorted(latest.items()):
            tx.add_metric([role], float(stats.get("tx_bytes", 0)))
            rx.add_metric([role], float(stats.get("rx_bytes", 0)))
            for broker in (stats.get("brokers") or {}).values():
                window = broker.get("rtt") or {}
                # Bootstrap and coordinator pseudo-brokers (nodeid -1) and idle ones have no samples.
                if broker.get("nodeid", -1) >= 0 and window.get("cnt", 0) > 0:
                    rtt.add_metric([role, str(broker.get("nodename", broker.get("name")))], window["avg"] / 1e6)
            if stats.get("type") == "consumer":
                for topic, t in (stats.get("topics") or {}).items():
                    for partition, p in (t.get("partitions") or {}).items():
                        # -1 is librdkafka's internal unassigned partition; a lag of -1 means unknown yet.
                        if partition != "-1" and p.get("consumer_lag", -1) >= 0:
                            lag.add_metric([role, topic, partition], float(p["consumer_lag"]))
            else:
                queued.add_metric([role], float(stats.get("msg_cnt", 0)))
        yield from (tx, rx, rtt, lag, queued)


STATS = KafkaStatsCollector()
REGISTRY.register(STATS)


def observed(conf: dict[str, Any], role: str, interval_ms: int) -> dict[str, Any]:
    """``conf`` plus statistics every ``interval_ms`` (0: none) reported as metrics of ``role``."""
    out = dict(conf)
    if interval_ms > 0:
        out["statistics.interval.ms"] = interval_ms
        out["stats_cb"] = STATS.callback(role)
    return out

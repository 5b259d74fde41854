"""librdkafka's log lines through Python logging, and its statistics as Prometheus metrics. The clients here point at
a closed port of 127.0.0.1: librdkafka then logs connection failures and still reports statistics."""

from __future__ import annotations

import json
import logging
import time

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry, generate_latest

from layerfill.config.settings import KafkaSettings
from layerfill.kafka.observe import LIBRDKAFKA_LOGGER, KafkaStatsCollector, observed
from layerfill.observability.logs import JsonFormatter

pytestmark = pytest.mark.unit

CLOSED = "127.0.0.1:1"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_librdkafka_log_lines_arrive_as_json_records_not_raw_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    handler = _Records()
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    logger.addHandler(handler)
    try:
        consumer = Consumer({**KafkaSettings(bootstrap_servers=CLOSED).client_config(), "group.id": "observe-test"})
        consumer.subscribe(["observe-test"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("Connection refused" in line for line in handler.lines):
            consumer.consume(num_messages=1, timeout=0.5)  # log lines are served from here
        consumer.close()
    finally:
        logger.removeHandler(handler)
    docs = [json.loads(line) for line in handler.lines]
    refused = [d for d in docs if "Connection refused" in d["msg"]]
    assert refused, docs
    assert refused[0]["logger"] == LIBRDKAFKA_LOGGER and refused[0]["level"] in ("error", "warning", "info")
    err = capfd.readouterr().err
    # Without the `logger` setting librdkafka prints `%3|1733150000.123|FAIL|rdkafka#consumer-1| ...` to stderr.
    assert "|FAIL|" not in err and "%3|" not in err and "%4|" not in err, err


SAMPLE = {
    "name": "layerfill#consumer-1",
    "type": "consumer",
    "tx_bytes": 1200,
    "rx_bytes": 3400,
    "msg_cnt": 0,
    "brokers": {
        "GroupCoordinator": {"nodeid": -1, "nodename": "", "rtt": {"avg": 0, "cnt": 0}},
        "127.0.0.1:19092/1": {"nodeid": 1, "nodename": "127.0.0.1:19092", "rtt": {"avg": 2500, "cnt": 7}},
    },
    "topics": {
        "layerfill.manifest-pulled": {
            "partitions": {"0": {"consumer_lag": 42}, "1": {"consumer_lag": -1}, "-1": {"consumer_lag": 0}}
        }
    },
}


def test_statistics_become_metrics_per_role() -> None:
    registry = CollectorRegistry()
    stats = KafkaStatsCollector()
    registry.register(stats)
    stats.callback("fetcher-consumer")(json.dumps(SAMPLE))
    stats.callback("fetcher-producer")(json.dumps({"type": "producer", "tx_bytes": 5, "rx_bytes": 6, "msg_cnt": 3}))
    stats.callback("broken")("not json")  # ignored, with a warning
    get = registry.get_sample_value
    assert get("layerfill_kafka_transmitted_bytes_total", {"role": "fetcher-consumer"}) == 1200
    assert get("layerfill_kafka_received_bytes_total", {"role": "fetcher-consumer"}) == 3400
    assert (
        get("layerfill_kafka_broker_rtt_seconds", {"role": "fetcher-consumer", "broker": "127.0.0.1:19092"}) == 0.0025
    )
    lag = {"role": "fetcher-consumer", "topic": "layerfill.manifest-pulled"}
    assert get("layerfill_kafka_consumer_lag_messages", {**lag, "partition": "0"}) == 42
    # Unknown lag (-1) and librdkafka's internal partition -1 are left out rather than exported as figures.
    assert get("layerfill_kafka_consumer_lag_messages", {**lag, "partition": "1"}) is None
    assert get("layerfill_kafka_consumer_lag_messages", {**lag, "partition": "-1"}) is None
    assert get("layerfill_kafka_producer_queue_messages", {"role": "fetcher-producer"}) == 3
    assert get("layerfill_kafka_transmitted_bytes_total", {"role": "broken"}) is None
    stats.forget("fetcher-producer")
    assert get("layerfill_kafka_producer_queue_messages", {"role": "fetcher-producer"}) is None
    # The families are described (and exposed, empty) before any statistics arrive.
    empty = CollectorRegistry()
    empty.register(KafkaStatsCollector())
    assert b"# TYPE layerfill_kafka_consumer_lag_messages gauge" in generate_latest(empty)


def test_a_real_client_reports_statistics_through_observed() -> None:
    registry = CollectorRegistry()
    stats = KafkaStatsCollector()
    registry.register(stats)
    conf = observed(KafkaSettings(bootstrap_servers=CLOSED).client_config(), "test-producer", 100)
    conf["stats_cb"] = stats.callback("test-producer")  # this test's collector, not the process-wide one
    producer = Producer(conf)
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and registry.get_sample_value("layerfill_kafka_producer_queue_messages", {"role": "test-producer"}) is None
    ):
        producer.poll(0.2)
    assert registry.get_sample_value("layerfill_kafka_producer_queue_messages", {"role": "test-producer"}) == 0
    assert conf["statistics.interval.ms"] == 100
    assert "stats_cb" not in observed({}, "off", 0) and "statistics.interval.ms" not in observed({}, "off", 0)


def test_build_info_names_the_versions() -> None:
    import confluent_kafka
    from prometheus_client import REGISTRY

    import layerfill
    from layerfill.observability import build_info  # noqa: F401  (registers the metric)

    labels = {
        "version": layerfill.__version__,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
    }
    found = next(s for s in REGISTRY.collect() if s.name == "layerfill_build").samples[0]
    assert found.name == "layerfill_build_info" and found.value == 1
    assert {k: found.labels[k] for k in labels} == labels and found.labels["confluent_kafka"].count(".") == 2

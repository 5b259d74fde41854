"""Prometheus metrics of the bridge."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("layerfill_bridge_requests_total", "HTTP requests by endpoint and status code", ["endpoint", "code"])
EVENTS = Counter(
    "layerfill_bridge_events_total",
    "Registry events by source and outcome (published, dead_lettered, ignored_<reason>)",
    ["source", "outcome"],
)
PUBLISH_SECONDS = Histogram(
    "layerfill_bridge_publish_seconds",
    "Time from request to Kafka acknowledgement of all its events",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

"""Prometheus metrics of the fetcher."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "layerfill_fetcher_events_total",
    "Consumed events by outcome (complete, already_complete, duplicate_in_batch, retried, dead_lettered)",
    ["outcome"],
)
ITEMS = Counter("layerfill_fetcher_items_total", "Planned items by kind and outcome", ["kind", "outcome"])
# Unit last, as Prometheus names go (was layerfill_fetcher_bytes_fetched_total before 0.2).
BYTES = Counter("layerfill_fetcher_fetched_bytes_total", "Bytes fetched from upstreams into the cache", ["kind"])
FILL_SECONDS = Histogram(
    "layerfill_fetcher_fill_seconds",
    "Time to make one image complete",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
BATCH_SECONDS = Histogram("layerfill_fetcher_batch_seconds", "Consume-process-commit time of one batch")
INFLIGHT_BLOBS = Gauge("layerfill_fetcher_inflight_blobs", "Blob transfers in progress")
INFLIGHT_IMAGES = Gauge("layerfill_fetcher_inflight_images", "Image fills in progress")
RETRIES = Counter("layerfill_fetcher_retries_total", "Attempts that failed and were retried", ["where"])
DEAD_LETTERS = Counter("layerfill_fetcher_dead_letters_total", "Events dead-lettered, by error class", ["error_class"])
LAG = Gauge(
    "layerfill_fetcher_consumer_lag",
    "Messages behind the partition end, per assigned partition",
    ["topic", "partition"],
)


def count_item(kind: str, outcome: str, nbytes: int) -> None:
    ITEMS.labels(kind, outcome).inc()
    if nbytes:
        BYTES.labels(kind).inc(nbytes)

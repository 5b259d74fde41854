"""Prometheus metrics of the fetcher."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from layerfill.kafka.stage import StageMetrics

# The metrics every stage exports (layerfill.kafka.stage): events, dead letters, retries, batch time, lag.
STAGE = StageMetrics.named(
    "fetcher",
    "Consumed events by outcome (complete, already_complete, duplicate_in_batch, retried, dead_lettered)",
)
EVENTS, DEAD_LETTERS, RETRIES = STAGE.events, STAGE.dead_letters, STAGE.retries
ITEMS = Counter("layerfill_fetcher_items_total", "Planned items by kind and outcome", ["kind", "outcome"])
# Unit last, as Prometheus names go (was layerfill_fetcher_bytes_fetched_total before 0.2).
BYTES = Counter("layerfill_fetcher_fetched_bytes_total", "Bytes fetched from upstreams into the cache", ["kind"])
FILL_SECONDS = Histogram(
    "layerfill_fetcher_fill_seconds",
    "Time to make one image complete",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
INFLIGHT_BLOBS = Gauge("layerfill_fetcher_inflight_blobs", "Blob transfers in progress")
INFLIGHT_IMAGES = Gauge("layerfill_fetcher_inflight_images", "Image fills in progress")


def count_item(kind: str, outcome: str, nbytes: int) -> None:
    ITEMS.labels(kind, outcome).inc()
    if nbytes:
        BYTES.labels(kind).inc(nbytes)


# -- upstream cost (docs/upstream-cost.md); upstream requests and bytes are counted by the client's transport
# (layerfill/remote/transport/metered.py) --
BLOBS_DEFERRED = Counter(
    "layerfill_fetcher_blobs_deferred_total",
    "Missing layers waited for while a client's pull was in progress, by how they got into the cache",
    ["route", "outcome"],  # delivered_by_proxy | fetched_after_wait
)
SAVED_BYTES = Counter(
    "layerfill_fetcher_saved_bytes_total",
    "Bytes of deferred layers the proxy stored for a client's pull, so the fetcher did not fetch them",
    ["route"],
)
MANIFEST_SOURCES = Counter(
    "layerfill_fetcher_manifest_sources_total",
    "Manifests resolved, by where their bytes came from (event, cache, upstream)",
    ["route", "source"],
)
LEASE_WAITS = Counter(
    "layerfill_fetcher_blob_lease_waits_total",
    "Blob stores that waited for another fetcher's upstream GET of the same blob",
    ["route"],
)

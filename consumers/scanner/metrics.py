"""Prometheus metrics of the scanner."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "layerfill_scanner_events_total",
    "Consumed ImageCached events by outcome (scanned, already_scanned, retried, dead_lettered)",
    ["outcome"],
)
SCANS = Counter("layerfill_scanner_scans_total", "Manifests scanned, by final state", ["state"])
SCAN_SECONDS = Histogram(
    "layerfill_scanner_scan_seconds",
    "Time to index one manifest and read its vulnerability report",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
BATCH_SECONDS = Histogram("layerfill_scanner_batch_seconds", "Consume-process-commit time of one batch")
INFLIGHT_SCANS = Gauge("layerfill_scanner_inflight_images", "Images being scanned")
RETRIES = Counter("layerfill_scanner_retries_total", "Attempts that failed and were retried", ["where"])
DEAD_LETTERS = Counter("layerfill_scanner_dead_letters_total", "Events dead-lettered, by error class", ["error_class"])
VULNERABILITIES = Counter(
    "layerfill_scanner_vulnerabilities_total", "Vulnerabilities reported for scanned manifests", ["severity"]
)
LAG = Gauge(
    "layerfill_scanner_consumer_lag",
    "Messages behind the partition end, per assigned partition",
    ["topic", "partition"],
)

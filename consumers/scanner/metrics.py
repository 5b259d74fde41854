"""Prometheus metrics of the scanner."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from layerfill.kafka.stage import StageMetrics

# The metrics every stage exports (layerfill.kafka.stage): events, dead letters, retries, batch time, lag.
STAGE = StageMetrics.named(
    "scanner",
    "Consumed ImageCached events by outcome (scanned, already_scanned, retried, dead_lettered)",
)
EVENTS, DEAD_LETTERS, RETRIES = STAGE.events, STAGE.dead_letters, STAGE.retries
SCANS = Counter("layerfill_scanner_scans_total", "Manifests scanned, by final state", ["state"])
SCAN_SECONDS = Histogram(
    "layerfill_scanner_scan_seconds",
    "Time to index one manifest and read its vulnerability report",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
INFLIGHT_SCANS = Gauge("layerfill_scanner_inflight_images", "Images being scanned")
# Counts a manifest's vulnerabilities once, when its first final report is recorded: a rescan of a manifest that
# already has one (scanner.rescan, a replay) does not count them again. It replaces
# layerfill_scanner_vulnerabilities_total, which counted every report. Not a gauge per image: one series per
# digest and severity, kept forever by every replica, is unbounded cardinality; the per-image numbers are in the
# state DB and `layerfill status`.
NEW_VULNERABILITIES = Counter(
    "layerfill_scanner_new_vulnerabilities_total",
    "Vulnerabilities in manifests' first final reports, by severity (rescans do not count again)",
    ["severity"],
)

"""One image manifest scanned: support check -> layer URIs -> Clair index -> vulnerability report -> result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from layerfill.config.routes import Route
from layerfill.serde import events
from layerfill.serde.records import ImageCached, ImageScanned
from layerfill.state.records import ScanState

from .clair import ClairClient
from .errors import ClairRejected, IndexFailed
from .layers import LayerLocator
from .reports import INDEX_FINISHED, summarize_vulnerability_report
from .request import index_request, unsupported_reason

SCANNER = "clair"


@dataclass(frozen=True)
class ScanResult:
    digest: str
    state: ScanState  # indexed | index_error | unsupported (never pending)
    scanner_version: str | None = None
    packages: int | None = None
    vulnerabilities: dict[str, int] | None = None  # per normalized severity; None: the matcher had no answer
    vulnerability_names: tuple[str, ...] = ()
    report_uri: str | None = None
    error: str | None = None
    occurred_at: datetime = field(default_factory=events.utc_now)

    def event(self, image_cached: ImageCached) -> ImageScanned:
        """The ImageScanned record for this result, caused by the ImageCached `image_cached`."""
        value = events.image_scanned(  # derives the event id, as every ImageScanned's
            caused_by=image_cached.event_id, registry=image_cached.registry, repository=image_cached.repository,
            digest=self.digest, scanner=SCANNER, state=self.state.value, occurred_at=self.occurred_at,
            scanner_version=self.scanner_version, packages=self.packages, vulnerabilities=self.vulnerabilities,
            report_uri=self.report_uri, error=self.error,
        )  # fmt: skip
        return ImageScanned.from_avro(value)


class ManifestScanner:
    def __init__(self, clair: ClairClient, locator: LayerLocator) -> None:
        self.clair = clair
        self.locator = locator

    def scan(self, route: Route, repository: str, manifest: Mapping[str, Any]) -> ScanResult:
        """Scan one CachedManifest of an ImageCached event.

        Raises IndexFailed when Clair's report ends in IndexError (the caller decides when that is final),
        ClairUnavailable when Clair cannot give an answer now."""
        digest = manifest["digest"]
        reason = unsupported_reason(manifest)
        if reason is not None:
            return ScanResult(digest, ScanState.UNSUPPORTED, error=reason)
        layers = [
            (layer["digest"], self.locator.locate(route, repository, layer["digest"])) for layer in manifest["layers"]
        ]
        try:
            outcome = self.clair.index(index_request(digest, layers))
        except ClairRejected as exc:
            return ScanResult(digest, ScanState.UNSUPPORTED, error=f"Clair refused the manifest: {exc}")
        summary = outcome.summary
        if summary.state != INDEX_FINISHED:
            raise IndexFailed(summary.error or summary.state)
        report = self.clair.vulnerability_report(digest)
        vulns = None if report is None else summarize_vulnerability_report(report)
        return ScanResult(
            digest,
            ScanState.INDEXED,
            scanner_version=outcome.indexer_state,
            packages=summary.package_count,
            vulnerabilities=None if vulns is None else vulns.counts,
            vulnerability_names=() if vulns is None else vulns.names,
            report_uri=self.clair.vulnerability_report_url(digest),
        )

    def index_error(self, digest: str, error: str) -> ScanResult:
        """The final result once Clair's IndexError has outlasted the retries."""
        return ScanResult(digest, ScanState.INDEX_ERROR, error=error, report_uri=self.clair.index_report_url(digest))

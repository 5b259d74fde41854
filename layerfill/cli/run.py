"""`layerfill run bridge | fetcher | scanner`: the long-running processes."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Run a layerfill process in the foreground.",
    epilog="Examples: `layerfill run fetcher`; `LAYERFILL_CONFIG=/etc/layerfill.yaml layerfill run bridge`; "
    "`eval $(layerfill devstack env) && layerfill run scanner`.",
)


def _settings():
    from layerfill.config import load_settings
    from layerfill.observability.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    return settings


@app.command()
def bridge() -> None:
    """HTTP endpoints for registry notifications (distribution, Harbor) -> ManifestPulled on Kafka."""
    from layerfill.producers.bridge import serve

    serve(_settings())


@app.command()
def fetcher() -> None:
    """Consume ManifestPulled and make every pulled image complete in the cache (exactly-once outputs)."""
    from layerfill.consumers.fetcher.service import FetcherService

    svc = FetcherService(_settings())
    svc.install_signal_handlers()
    svc.run()


@app.command()
def scanner() -> None:
    """Consume ImageCached, have Clair index every image manifest, record the result and emit ImageScanned."""
    from layerfill.consumers.scanner.service import ScannerService

    svc = ScannerService(_settings())
    svc.install_signal_handlers()
    svc.run()


@app.command("quay-logs")
def quay_logs() -> None:
    """Quay's pull logs (from Kafka, or polled from its logs API: quay_logs.source) -> ManifestPulled on Kafka."""
    from layerfill.producers.quay.service import make_source

    src = make_source(_settings())
    src.install_signal_handlers()
    src.run()


@app.command()
def ui() -> None:
    """Read-only status page (HTML, no JavaScript): images, scans, dead letters by cause; a page per image.
    Listens on ui.host:ui.port (LAYERFILL_UI__PORT, default 18092)."""
    from layerfill.ui.app import serve

    serve(_settings())

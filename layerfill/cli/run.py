"""`layerfill run bridge | fetcher | scanner`: the long-running processes."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run a layerfill process in the foreground.")


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

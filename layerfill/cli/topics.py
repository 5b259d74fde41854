"""`layerfill topics ensure | list`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Kafka topics: create what is missing, align retention and cleanup policy.")


@app.command()
def ensure(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create the configured topics (idempotent) and report what changed."""
    from confluent_kafka import KafkaException

    from layerfill.config import load_settings
    from layerfill.kafka.admin import ensure_topics

    settings = load_settings()
    try:
        changes = ensure_topics(settings.kafka, settings.topics.all())
    except KafkaException as exc:
        Console(stderr=True).print(f"[red]Kafka at {settings.kafka.bootstrap_servers} failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps([c.__dict__ for c in changes], indent=2))
    else:
        table = Table("topic", "action", "detail")
        for c in changes:
            style = {"error": "red", "unchanged": "dim"}.get(c.action, "green")
            table.add_row(c.topic, f"[{style}]{c.action}[/{style}]", c.detail)
        Console().print(table)
    if any(c.action == "error" for c in changes):
        raise typer.Exit(1)

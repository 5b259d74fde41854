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
    """Create the configured topics (idempotent) and report what changed; with a schema registry configured, also
    set BACKWARD_TRANSITIVE compatibility on each event subject."""
    from confluent_kafka import KafkaException

    from layerfill.config import load_settings
    from layerfill.kafka.admin import ensure_topics

    settings = load_settings()
    try:
        changes = ensure_topics(settings.kafka, settings.topics.all())
    except KafkaException as exc:
        Console(stderr=True).print(f"[red]Kafka at {settings.kafka.bootstrap_servers} failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    subjects = _ensure_subjects(settings)
    if as_json:
        print(
            json.dumps({"topics": [c.__dict__ for c in changes], "subjects": [s.__dict__ for s in subjects]}, indent=2)
        )
    else:
        table = Table("topic", "action", "detail")
        for c in changes:
            style = {"error": "red", "unchanged": "dim"}.get(c.action, "green")
            table.add_row(c.topic, f"[{style}]{c.action}[/{style}]", c.detail)
        Console().print(table)
        if subjects:
            table = Table("schema registry subject", "action", "detail")
            for s in subjects:
                style = {"error": "red", "unchanged": "dim"}.get(s.action, "green")
                table.add_row(s.subject, f"[{style}]{s.action}[/{style}]", s.detail)
            Console().print(table)
    if any(c.action == "error" for c in [*changes, *subjects]):
        raise typer.Exit(1)


def _ensure_subjects(settings):  # type: ignore[no-untyped-def]
    """BACKWARD_TRANSITIVE on each event subject, when a schema registry is configured (else nothing to do)."""
    from layerfill.serde.subjects import ensure_compatibility, event_subjects
    from layerfill.wiring import make_registry_client

    client = make_registry_client(settings)
    if client is None:
        return []
    return ensure_compatibility(client, event_subjects(settings.topics))

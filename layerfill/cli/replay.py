"""`layerfill replay`: move a consumer group's committed offsets on a topic, so it reads records again.

Replaying the fetcher's group is safe: an image that is already complete costs one state lookup per event
and emits nothing (no LayerCached or ImageCached again), and no blob is fetched twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def parse_time(text: str) -> int:
    """ISO 8601 (no zone means UTC) or epoch milliseconds -> epoch milliseconds; ValueError naming --to-time."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid --to-time {text!r}: expected ISO 8601 (2025-01-31T12:00:00Z) or epoch ms") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def replay(
    to_time: Annotated[str | None, typer.Option("--to-time", help="ISO 8601 time (UTC if no zone) or epoch ms")] = None,
    to_offset: Annotated[int | None, typer.Option("--to-offset", help="This offset on every chosen partition")] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="The oldest record retention kept")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="The end: skip everything not yet read")] = False,
    group: Annotated[str | None, typer.Option(help="Consumer group (default: the fetcher's)")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic (default: manifest-pulled)")] = None,
    partition: Annotated[list[int] | None, typer.Option("--partition", "-p", help="Repeatable; default all")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--execute", help="Show the plan only (default) or apply it")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout")] = False,
) -> None:
    """Move committed offsets (printing per partition from -> to). Refuses while the group has active members.

    Exit codes: 0 planned or applied, 1 the group is active or Kafka failed, 2 bad input.

    Examples:

      layerfill replay --to-time 2025-01-31T12:00:00Z

      layerfill replay --to-earliest -p 3 --execute
    """
    from confluent_kafka import KafkaException

    from layerfill.config import load_settings
    from layerfill.ops.offsets import GroupActive, OffsetAdmin, Target, plan_replay

    err = Console(stderr=True)
    settings = load_settings()
    group = group or settings.fetcher.group_id
    topic = topic or settings.topics.manifest_pulled.name
    chosen = [name for name, on in (("--to-time", to_time is not None), ("--to-offset", to_offset is not None),
                                    ("--to-earliest", to_earliest), ("--to-latest", to_latest)) if on]  # fmt: skip
    try:
        if len(chosen) != 1:
            raise ValueError(
                f"invalid target: give exactly one of --to-time, --to-offset, --to-earliest, --to-latest (got {chosen or 'none'})"
            )
        if to_offset is not None and to_offset < 0:
            raise ValueError(f"invalid --to-offset {to_offset}: must be >= 0")
        timestamp_ms = parse_time(to_time) if to_time is not None else None
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    kind: Target = {"--to-time": "timestamp", "--to-offset": "offset", "--to-earliest": "earliest"}.get(
        chosen[0], "latest"
    )  # type: ignore[assignment]
    admin = OffsetAdmin(settings.kafka)
    try:
        moves = plan_replay(
            admin, group, topic, kind, partitions=partition, offset=to_offset, timestamp_ms=timestamp_ms
        )
        if not dry_run:
            admin.apply(group, topic, moves)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except GroupActive as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from None
    except KafkaException as exc:
        err.print(f"[red]Kafka at {settings.kafka.bootstrap_servers} failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        admin.close()
    if as_json:
        print(
            json.dumps(
                {"group": group, "topic": topic, "applied": not dry_run, "partitions": [m.to_dict() for m in moves]},
                indent=2,
            )
        )
        return
    table = Table("partition", "from", "to", "replays", "low", "high", title=f"{group} on {topic}")
    for m in moves:
        table.add_row(str(m.partition), "-" if m.current is None else str(m.current), str(m.target),
                      "-" if m.delta is None else str(m.delta), str(m.low), str(m.high))  # fmt: skip
    console = Console()
    console.print(table)
    console.print("applied" if not dry_run else "[yellow]dry run[/yellow]: nothing changed; pass --execute to apply")

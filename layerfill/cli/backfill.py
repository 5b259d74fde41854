"""`layerfill backfill`: one ManifestPulled (source backfill) per manifest already in the cache's storage, for caches
filled before layerfill ran. Rate-limited, resumable from a checkpoint in the state DB, filterable by prefix."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def backfill(
    prefix: Annotated[str | None, typer.Option(help="Only repositories whose name starts with this")] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry host[:port] events name (default: bridge.registry_name or the routes')")
    ] = None,
    rate: Annotated[float, typer.Option(help="Events per second at most")] = 50.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be published; publish nothing")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Ignore the checkpoint of an earlier run")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout")] = False,
) -> None:
    """Publish a ManifestPulled for every manifest revision in storage (resumes where an earlier run stopped).

    Exit codes: 0 done, 1 storage or Kafka failed (the checkpoint keeps what was published), 2 bad input."""
    from layerfill.config import load_settings
    from layerfill.kafka.producer import KafkaUnavailable
    from layerfill.ops.context import event_registry
    from layerfill.ops.enumerate import format_position, list_repositories, parse_position, stored_manifests
    from layerfill.ops.ratelimit import Pacer
    from layerfill.sinks.base import SinkError
    from layerfill.sinks.distribution import DistributionSink

    err = Console(stderr=True)
    settings = load_settings()
    try:
        reg = event_registry(settings, registry)
        pacer = Pacer(rate)
        sink = DistributionSink(settings.s3)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    checkpoint_key = f"backfill:{reg}:{prefix or ''}"
    state = None
    after = None
    if not dry_run:
        from layerfill.state.store import StateStore

        state = StateStore(settings.state.database_url)
        saved = None if restart else state.get_kv(checkpoint_key)
        after = parse_position(saved) if saved else None
    published = 0
    try:
        items = list(stored_manifests(sink, list_repositories(sink, prefix), after))
        if dry_run:
            _report(as_json, {"dry_run": True, "registry": reg, "prefix": prefix, "would_publish": len(items)})
            return
        assert state is not None
        from layerfill.producers.publisher import Publisher

        pub = Publisher(settings)
        try:
            with Progress(TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.description}"), console=err, transient=True) as progress:  # fmt: skip
                task = progress.add_task("", total=len(items))
                for item in items:
                    pacer.wait()
                    progress.update(task, description=f"{item.repository}@{item.digest[:19]}")
                    pub.publish_manifest_pulled(
                        registry=reg, repository=item.repository, digest=item.digest,
                        reference=item.tags[0] if item.tags else None, source="backfill",
                    )  # fmt: skip
                    # After the ack: a crash re-publishes at most one event, which the fetcher absorbs.
                    state.set_kv(checkpoint_key, format_position(item.position))
                    published += 1
                    progress.advance(task)
            state.delete_kv(checkpoint_key)  # finished: the next run starts from the beginning
        finally:
            pub.close()
    except (SinkError, KafkaUnavailable) as exc:
        err.print(f"[red]stopped after {published} event(s):[/red] {exc}; run again to resume")
        raise typer.Exit(1) from None
    finally:
        sink.close()
        if state is not None:
            state.close()
    _report(as_json, {"dry_run": False, "registry": reg, "prefix": prefix, "published": published,
                      "resumed_after": format_position(after) if after else None})  # fmt: skip


def _report(as_json: bool, doc: dict[str, object]) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    if doc["dry_run"]:
        Console().print(f"would publish {doc['would_publish']} ManifestPulled event(s) as registry {doc['registry']}")
    else:
        resumed = f" (resumed after {doc['resumed_after']})" if doc["resumed_after"] else ""
        Console().print(f"published {doc['published']} ManifestPulled event(s) as registry {doc['registry']}{resumed}")

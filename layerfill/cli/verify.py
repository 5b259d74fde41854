"""`layerfill verify`: audit the cache's storage, image by image; `--repair` asks the fetcher to complete the partial ones."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from layerfill.cli.progress import bar as progress_bar

if TYPE_CHECKING:
    from layerfill.config.settings import Settings
    from layerfill.ops.audit import ImageAudit
    from layerfill.state.store import StateStore

_STYLE = {"complete": "green", "partial": "yellow", "unknown": "red"}


def verify(
    prefix: Annotated[str | None, typer.Option(help="Only repositories whose name starts with this")] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry host[:port] events name (default: bridge.registry_name or the routes')")
    ] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Re-hash every stored blob (reads all the data)")] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Publish ManifestPulled (source backfill) for partial images")
    ] = False,
    all_rows: Annotated[bool, typer.Option("--all", help="List complete images too, not only problems")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout")] = False,
) -> None:
    """Check that every image in the cache has all its planned blobs and child manifests.

    Exit codes: 0 all complete, 1 partial or unknown images found (or storage failed), 2 bad input.

    Examples:

      layerfill verify --prefix library/

      layerfill verify --deep --all --json

      layerfill verify --repair --registry cache.example.com
    """
    from layerfill.config import load_settings
    from layerfill.ops.audit import AuditStatus, audit_manifest
    from layerfill.ops.context import event_registry, state_database_exists
    from layerfill.ops.enumerate import StoredManifest, list_repositories, stored_manifests
    from layerfill.sinks.base import SinkError
    from layerfill.sinks.blobhash import StoredBlobHasher
    from layerfill.sinks.factory import cache_storage

    err = Console(stderr=True)
    settings = load_settings()
    try:
        reg = event_registry(settings, registry) if (repair or registry) else None
        sink = cache_storage(settings.s3)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    # Images are judged by the rules of the route the fetcher fills them by (its platforms, its limits).
    route_registry = reg or _routes_registry(settings)
    state = None
    if state_database_exists(settings):
        from layerfill.state.store import StateStore

        state = StateStore(settings.state.database_url)
    try:
        with err.status("listing the cache's storage", spinner="dots"):
            targets = [*stored_manifests(sink, list_repositories(sink, prefix))]
        if state is not None:
            seen = {(t.repository, t.digest) for t in targets}
            known = state.list_images(repository_prefix=prefix, registry=reg, limit=10_000)
            targets += [StoredManifest(i.repository, i.digest) for i in known if (i.repository, i.digest) not in seen]
        hasher = StoredBlobHasher(settings.s3) if deep else None
        results: list[ImageAudit] = []
        with progress_bar("verify", err) as progress:
            task = progress.add_task("", total=len(targets))
            for t in targets:
                progress.update(task, description=f"{t.repository}@{t.digest[:19]}")
                rules = settings.walk_rules(settings.route_for(route_registry, t.repository))
                results.append(
                    audit_manifest(sink, t.repository, t.digest, tags=list(t.tags), rules=rules, hasher=hasher)
                )
                progress.advance(task)
    except SinkError as exc:
        err.print(f"[red]storage failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        sink.close()

    partial = [r for r in results if r.status is AuditStatus.PARTIAL]
    repaired: list[dict[str, object]] = []
    if repair and partial:
        assert reg is not None
        repaired = _repair(settings, reg, partial, state)
    if state is not None:
        state.close()

    if as_json:
        counts = {s.value: sum(r.status is s for r in results) for s in AuditStatus}
        doc = {"images": [r.to_dict() for r in results], "counts": counts, "repaired": repaired}
        print(json.dumps(doc, indent=2))
    else:
        _print_table(results, all_rows)
        if repaired:
            Console().print(f"published {len(repaired)} ManifestPulled event(s) (source backfill) for partial images")
    if any(r.status is not AuditStatus.COMPLETE for r in results):
        raise typer.Exit(1)


def _routes_registry(settings: Settings) -> str | None:
    """The registry events name when the settings decide it; None lets every registry's routes be considered."""
    from layerfill.ops.context import event_registry

    try:
        return event_registry(settings, None)
    except ValueError:
        return None


def _repair(
    settings: Settings, registry: str, partial: list[ImageAudit], state: StateStore | None
) -> list[dict[str, object]]:
    from layerfill.producers.publisher import Publisher

    pub = Publisher(settings)
    out: list[dict[str, object]] = []
    try:
        for r in partial:
            if state is not None:
                # Otherwise a state DB that still says "complete" makes the fetcher skip the event.
                state.mark_partial(registry, r.repository, r.digest, missing=[m.digest for m in r.missing])
            d = pub.publish_manifest_pulled(
                registry=registry, repository=r.repository, digest=r.digest,
                reference=r.tags[0] if r.tags else None, source="backfill",
            )  # fmt: skip
            out.append({"repository": r.repository, "digest": r.digest, "partition": d.partition, "offset": d.offset})
    finally:
        pub.close()
    return out


def _print_table(results: list[ImageAudit], all_rows: bool) -> None:
    console = Console()
    table = Table("repository", "digest", "tags", "status", "missing / detail")
    for r in results:
        if r.status.value == "complete" and not all_rows:
            continue
        style = _STYLE[r.status.value]
        why = r.detail or "\n".join(f"{m.kind} {m.digest} ({m.reason}, {m.size} B)" for m in r.missing)
        table.add_row(r.repository, r.digest, ",".join(r.tags), f"[{style}]{r.status.value}[/{style}]", why)
    if table.row_count:
        console.print(table)
    counts = {s: sum(r.status.value == s for r in results) for s in _STYLE}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(results)} manifest(s)")

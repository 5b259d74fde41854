"""`layerfill backfill`: one ManifestPulled (source backfill) per manifest the proxy registry already holds, for
caches filled before layerfill ran. The content comes from the cache's storage (distribution's S3 layout) or, for
registries whose storage is not ours, from the registry's catalog and tags API. Rate-limited, resumable from a
checkpoint in the state DB, filterable by prefix."""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Protocol

import typer
from rich.console import Console

from layerfill.cli.progress import bar as progress_bar
from layerfill.ops.enumerate import CatalogStorage, StoredManifest

if TYPE_CHECKING:
    from layerfill.config.settings import Settings


class Source(StrEnum):
    storage = "storage"
    api = "api"


def backfill(
    prefix: Annotated[str | None, typer.Option(help="Only repositories whose name starts with this")] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry host[:port] events name (default: bridge.registry_name or the routes')")
    ] = None,
    source: Annotated[
        Source,
        typer.Option(help="Where the content comes from: the cache's S3 storage, or the registry's /v2 catalog+tags"),
    ] = Source.storage,
    registry_url: Annotated[
        str | None,
        typer.Option(
            help="With --source api: the registry's URL (default: the routes' proxy_url, else https://REGISTRY)"
        ),
    ] = None,
    repositories: Annotated[
        list[str] | None,
        typer.Option("--repository", help="Only this repository (repeatable); skips listing the catalog"),
    ] = None,
    rate: Annotated[float, typer.Option(help="Events per second at most")] = 50.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be published; publish nothing")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Ignore the checkpoint of an earlier run")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout")] = False,
) -> None:
    """Publish a ManifestPulled for every manifest the proxy registry holds (resumes where an earlier run stopped).

    Examples:

      layerfill backfill --dry-run --prefix library/

      layerfill backfill --rate 20 --registry cache.example.com

      layerfill backfill --source api --registry-url https://quay.example.com --repository proxy/library/debian

    Exit codes: 0 done, 1 storage, registry or Kafka failed (the checkpoint keeps what was published),
    2 bad input (including a registry that does not list its repositories: use --repository or --source storage),
    130 interrupted (the checkpoint keeps what was published)."""
    from layerfill.config import load_settings
    from layerfill.kafka.producer import KafkaUnavailable
    from layerfill.oci.reference import validate_repository
    from layerfill.ops.catalog import RegistryResponseError
    from layerfill.ops.catalog_api import CatalogUnavailable
    from layerfill.ops.context import event_registry
    from layerfill.ops.enumerate import (
        format_position,
        list_repositories,
        matches_prefix,
        parse_position,
        stored_manifests,
    )
    from layerfill.ops.ratelimit import Pacer
    from layerfill.remote.errors import UpstreamError
    from layerfill.sinks.base import SinkError

    err = Console(stderr=True)
    settings = load_settings()
    try:
        reg = event_registry(settings, registry)
        pacer = Pacer(rate)
        if registry_url and source is not Source.api:
            raise ValueError("invalid --registry-url: it is for --source api only")
        chosen = sorted({validate_repository(r, "--repository") for r in repositories or []})
        catalog, url = _open_catalog(settings, source, reg, registry_url)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    # Separate checkpoints: the two sources need not see the same manifests.
    checkpoint_key = (
        f"backfill:{reg}:{prefix or ''}" if source is Source.storage else f"backfill-api:{reg}:{prefix or ''}"
    )
    doc: dict[str, object] = {"dry_run": dry_run, "source": source.value, "registry": reg, "prefix": prefix}
    if url is not None:
        doc["registry_url"] = url
    state = None
    after = None
    if not dry_run:
        from layerfill.state.store import StateStore

        state = StateStore(settings.state.database_url)
        saved = None if restart else state.get_kv(checkpoint_key)
        after = parse_position(saved) if saved else None
    published = 0
    last: tuple[str, str] | None = None
    try:
        repos = [r for r in chosen if matches_prefix(r, prefix)] if chosen else list_repositories(catalog, prefix)
        items: Iterable[StoredManifest] = stored_manifests(catalog, repos, after)
        total: int | None = None
        if source is Source.storage:  # listing storage is cheap: know the total up front (and so the ETA)
            with err.status("listing the cache's storage", spinner="dots"):
                items = list(items)
            total = len(items)
        if dry_run:
            _report(as_json, doc | {"would_publish": sum(1 for _ in items), **_skipped(catalog)})
            return
        assert state is not None
        from layerfill.producers.publisher import Publisher

        pub = Publisher(settings)
        try:
            with progress_bar("backfill", err) as progress:
                task = progress.add_task("", total=total)
                # The api source resolves tags while iterating: events flow before the whole registry is read.
                for item in items:
                    pacer.wait()
                    progress.update(task, description=f"{item.repository}@{item.digest[:19]}")
                    pub.publish_manifest_pulled(
                        registry=reg, repository=item.repository, digest=item.digest,
                        reference=item.tags[0] if item.tags else None, source="backfill",
                    )  # fmt: skip
                    # After the ack: a crash re-publishes at most one event, which the fetcher absorbs.
                    state.set_kv(checkpoint_key, format_position(item.position))
                    last = item.position
                    published += 1
                    progress.advance(task)
            state.delete_kv(checkpoint_key)  # finished: the next run starts from the beginning
        finally:
            pub.close()
    except CatalogUnavailable as exc:
        _fail(err, as_json, doc, 2, f"registry {reg}: {exc}", published, last or after)
    except (SinkError, KafkaUnavailable, UpstreamError, RegistryResponseError) as exc:
        _fail(err, as_json, doc, 1, f"stopped after {published} event(s): {exc}; run again to resume", published,
              last or after)  # fmt: skip
    except KeyboardInterrupt:
        _fail(err, as_json, doc, 130, f"interrupted after {published} event(s); run again to resume", published,
              last or after)  # fmt: skip
    finally:
        catalog.close()
        if state is not None:
            state.close()
    resumed = format_position(after) if after else None
    _report(as_json, doc | {"published": published, "resumed_after": resumed, **_skipped(catalog)})


class _ClosableCatalog(CatalogStorage, Protocol):
    def close(self) -> None: ...


def _open_catalog(
    settings: Settings, source: Source, registry: str, registry_url: str | None
) -> tuple[_ClosableCatalog, str | None]:
    """The content to enumerate, and the registry URL when it is the API. ValueError on bad settings or input."""
    if source is Source.storage:
        from layerfill.sinks.factory import cache_storage

        return cache_storage(settings.s3), None
    from layerfill.ops.catalog import registry_endpoint
    from layerfill.ops.catalog_api import RegistryApi
    from layerfill.remote.credentials import Credentials

    url, pair = registry_endpoint(settings.routes, registry, registry_url)
    api = RegistryApi(url, Credentials(*pair) if pair else None)
    return api, api.base_url


def _skipped(catalog: object) -> dict[str, object]:
    """What the api source left out (a repository or tag that vanished mid-run); storage has no such list."""
    from layerfill.ops.catalog_api import RegistryApi

    return {"skipped": list(catalog.skipped)} if isinstance(catalog, RegistryApi) else {}


def _fail(
    err: Console,
    as_json: bool,
    doc: dict[str, object],
    code: int,
    message: str,
    published: int,
    position: tuple[str, str] | None,
) -> None:
    from layerfill.ops.enumerate import format_position

    err.print(f"[red]{message}[/red]")
    if as_json:
        checkpoint = format_position(position) if position else None
        print(json.dumps(doc | {"error": message, "published": published, "checkpoint": checkpoint}, indent=2))
    raise typer.Exit(code)


def _report(as_json: bool, doc: dict[str, object]) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    where = f"registry {doc['registry']}" + (f" (listed at {doc['registry_url']})" if "registry_url" in doc else "")
    if doc["dry_run"]:
        Console().print(f"would publish {doc['would_publish']} ManifestPulled event(s) as {where}")
    else:
        resumed = f" (resumed after {doc['resumed_after']})" if doc["resumed_after"] else ""
        Console().print(f"published {doc['published']} ManifestPulled event(s) as {where}{resumed}")
    for line in doc.get("skipped") or []:  # type: ignore[attr-defined]
        Console(stderr=True).print(f"[yellow]skipped[/yellow] {line}")

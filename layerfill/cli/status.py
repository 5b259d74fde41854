"""`layerfill status`: per image in the state DB, whether it is complete in the cache, and the scan of each of its
image manifests (state, packages, vulnerabilities by severity). A rich table, or `--json`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from layerfill.state.records import BlobKind, ImageBlobRow, ImageRow, ScanRow

SEVERITY_ORDER = ("critical", "high", "medium", "low", "negligible", "unknown")


def image_manifests(image: ImageRow, blobs: Sequence[ImageBlobRow]) -> list[str]:
    """The image manifests of an image: one per config blob recorded when it completed (the children of an
    index), else the image's own digest (a single manifest, or an image not complete yet)."""
    children = sorted({b.manifest_digest for b in blobs if b.kind is BlobKind.CONFIG})
    return children or [image.digest]


def scan_view(digest: str, scan: ScanRow | None) -> dict[str, Any]:
    if scan is None:
        return {"digest": digest, "scan_state": None, "packages": None, "vulnerabilities": None, "error": None}
    return {
        "digest": digest,
        "scan_state": scan.state.value,
        "scanner": scan.scanner,
        "scanner_version": scan.scanner_version,
        "packages": scan.package_count,
        "vulnerabilities": scan.vulnerabilities,
        "report_uri": scan.report_uri,
        "error": scan.error,
        "attempts": scan.attempts,
        "finished_at": None if scan.finished_at is None else scan.finished_at.isoformat(),
    }


def scan_summary(scans: Sequence[ScanRow | None]) -> str:
    """One word for an image's scans: the common state, `not scanned`, or the states with their counts."""
    states = ["not scanned" if s is None else s.state.value for s in scans]
    if len(set(states)) == 1:
        return states[0]
    return ", ".join(f"{state} {states.count(state)}/{len(states)}" for state in sorted(set(states)))


def image_view(image: ImageRow, manifests: Sequence[tuple[str, ScanRow | None]]) -> dict[str, Any]:
    return {
        "registry": image.registry,
        "repository": image.repository,
        "reference": image.reference,
        "digest": image.digest,
        "media_type": image.media_type,
        "complete": image.is_complete,
        "status": image.status.value,
        "last_error": image.last_error,
        "updated_at": image.updated_at.isoformat(),
        "scan": scan_summary([scan for _, scan in manifests]),
        "manifests": [scan_view(digest, scan) for digest, scan in manifests],
    }


def format_vulnerabilities(counts: dict[str, int] | None) -> str:
    """`high 2, unknown 1`; `none` when matched and clean; `-` when there was no vulnerability report."""
    if counts is None:
        return "-"
    shown = [f"{sev} {counts[sev]}" for sev in SEVERITY_ORDER if counts.get(sev)]
    shown += [f"{sev} {n}" for sev, n in sorted(counts.items()) if sev not in SEVERITY_ORDER and n]
    return ", ".join(shown) or "none"


def format_referrers(counts: dict[str, int] | None) -> str:
    """`1 sig, 2 att, 1 sbom`; `none` when checked and none found; `-` when never checked."""
    if counts is None:
        return "-"
    names = (("signatures", "sig"), ("attestations", "att"), ("sboms", "sbom"), ("other", "other"))
    return ", ".join(f"{counts[k]} {short}" for k, short in names if counts.get(k)) or "none"


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _table(views: list[dict[str, Any]]) -> Table:
    table = Table(
        "repository", "tag", "digest", "complete", "artifacts", "manifest", "scan", "packages", "vulnerabilities"
    )
    for v in views:
        complete = "[green]yes[/green]" if v["complete"] else f"[yellow]no ({v['status']})[/yellow]"
        for i, m in enumerate(v["manifests"]):
            state = m["scan_state"] or "not scanned"
            style = {"indexed": "green", "index_error": "red", "unsupported": "magenta"}.get(state, "yellow")
            first = i == 0
            table.add_row(
                v["repository"] if first else "",
                (v["reference"] or "") if first else "",
                _short(v["digest"]) if first else "",
                complete if first else "",
                format_referrers(v.get("referrers")) if first else "",
                "=" if m["digest"] == v["digest"] else _short(m["digest"]),
                f"[{style}]{state}[/{style}]",
                "-" if m["packages"] is None else str(m["packages"]),
                format_vulnerabilities(m["vulnerabilities"]),
            )
    return table


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    repository: Annotated[str | None, typer.Option(help="Only repositories starting with this prefix.")] = None,
    registry: Annotated[str | None, typer.Option(help="Only this registry host[:port].")] = None,
    limit: Annotated[int, typer.Option(help="At most this many images, most recently updated first.")] = 100,
) -> None:
    """Per image: complete in the cache or not, and the scan of each image manifest (state, packages,
    vulnerabilities by severity).

    Examples:

      layerfill status --repository library/ --limit 20

      layerfill status --json | jq '.images[] | select(.complete | not)'
    """
    from layerfill.config import load_settings
    from layerfill.state.referrer_checks import ReferrerChecks
    from layerfill.state.store import StateStore

    err = Console(stderr=True)
    settings = load_settings()
    try:
        store = StateStore(settings.state.database_url)
    except Exception as exc:
        err.print(f"[red]cannot open the state DB:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        with err.status("reading the state DB", spinner="dots"):
            try:
                images = store.list_images(repository_prefix=repository, registry=registry, limit=limit)
            except ValueError as exc:
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from exc
            views = []
            checks = ReferrerChecks(store)
            for image in images:
                blobs = store.image_blobs(image.registry, image.repository, image.digest)
                digests = image_manifests(image, blobs)
                view = image_view(image, [(d, store.scan_for(image.registry, d)) for d in digests])
                check = checks.get(image.registry, image.repository, image.digest)
                view["referrers"] = None if check is None else check.counts.to_dict()
                views.append(view)
            totals = {**store.totals(), "referrers": checks.totals()}
            source = store.url
    finally:
        store.close()
    if as_json:
        print(json.dumps({"state_db": source, "totals": totals, "images": views}, indent=2))
        return
    out = Console()
    out.print(_table(views))
    imgs, scans = totals["images"], totals["scans"]
    out.print(
        f"{totals['image_count']} images ({imgs['complete']} complete); scans: "
        + ", ".join(f"{state} {n}" for state, n in scans.items())
        + f"  [dim]state DB: {source}[/dim]"
    )
    refs = totals["referrers"]
    out.print(
        f"supply-chain artifacts: {refs['signatures']} signatures, {refs['attestations']} attestations, "
        f"{refs['sboms']} SBOMs, {refs['other']} other ({refs['images_signed']} of {refs['images_checked']} "
        "checked images signed)"
    )

"""Seed the upstream registry with the test-image catalog (built without a container engine)."""

from __future__ import annotations

from pathlib import Path

from layerfill.testimages.catalog import DEFAULT_LARGE_SIZE, Catalog, build_catalog
from layerfill.testimages.push import push_image

from .context import StackContext


def catalog_dir(ctx: StackContext, large_size: int) -> Path:
    return ctx.paths.state / "images" / f"large-{large_size}"


def build(ctx: StackContext, large_size: int = DEFAULT_LARGE_SIZE) -> Catalog:
    """Build once per large-layer size; the catalog is deterministic, so a rebuild would give the same digests."""
    out = catalog_dir(ctx, large_size)
    if (out / "catalog.json").exists():
        return Catalog.load(out)
    cat = build_catalog(out, large_size=large_size)
    cat.save()
    return cat


def seed(
    ctx: StackContext, *, large_size: int = DEFAULT_LARGE_SIZE, prefix: str = "", names: list[str] | None = None
) -> dict[str, str]:
    """Push the catalog (or the named images) to the upstream, under `prefix` if given.
    Returns {"<repository>:<tag>" as pushed: manifest digest}."""
    cat = build(ctx, large_size)
    registry = f"{ctx.host}:{ctx.ports.upstream}"
    pushed = {}
    for name, info in cat.images.items():
        if names and name not in names:
            continue
        repo = f"{prefix.strip('/')}/{info.repository}" if prefix else info.repository
        push_image(cat.layout_path(name), info.tag, registry, repo)
        pushed[f"{repo}:{info.tag}"] = info.digest
    return pushed

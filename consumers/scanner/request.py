"""What to ask Clair (pure): whether an image manifest of an ImageCached event is something Clair can index, and
the body of Clair's `POST /indexer/api/v1/index_report` for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from layerfill.oci.mediatypes import CONFIG_TYPES, FOREIGN_LAYER_TYPES, LAYER_TYPES, base_type
from layerfill.oci.reference import validate_digest


@dataclass(frozen=True)
class LayerSource:
    """Where Clair fetches one layer: a URL, and request headers (e.g. Authorization) it must send."""

    uri: str
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)


def unsupported_reason(manifest: Mapping[str, Any]) -> str | None:
    """Why Clair cannot index this image manifest (a CachedManifest of ImageCached), or None if it can.

    Clair indexes Linux container filesystems: an artifact whose config is not an image config, a manifest
    without layers, a non-Linux platform, or layers that are not tar archives are recorded as unsupported
    instead of being sent to Clair."""
    config_type = base_type(manifest["config"]["media_type"])
    if config_type not in CONFIG_TYPES:
        return f"config media type {config_type!r} is not a container image config"
    platform = manifest.get("platform")
    if platform is not None and platform["os"] != "linux":
        return f"platform {platform['os']}/{platform['architecture']} is not Linux"
    layers = manifest["layers"]
    if not layers:
        return "the manifest has no layers"
    for layer in layers:
        media_type = base_type(layer["media_type"])
        if media_type not in LAYER_TYPES:
            return f"layer {layer['digest']} has media type {media_type!r}, not a tar layer"
        if media_type in FOREIGN_LAYER_TYPES:
            return f"layer {layer['digest']} is a non-distributable (foreign) layer"
    return None


def index_request(manifest_digest: str, layers: Sequence[tuple[str, LayerSource]]) -> dict[str, Any]:
    """Clair's Manifest: `{"hash", "layers": [{"hash", "uri", "headers"}]}` in manifest (bottom-up) order.

    Media types are left out on purpose: Clair's API decompresses every layer it fetches (the compression is
    sniffed) and indexes it as a plain OCI tar, whatever type it is told."""
    body_layers = []
    for digest, source in layers:
        body_layers.append(
            {
                "hash": validate_digest(digest, "layer digest"),
                "uri": source.uri,
                "headers": {name: list(values) for name, values in source.headers.items()},
            }
        )
    return {"hash": validate_digest(manifest_digest, "manifest digest"), "layers": body_layers}

"""Write OCI image layouts (oci-layout, index.json, blobs/sha256/...) by hand."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import Descriptor, Platform
from layerfill.oci.reference import validate_tag
from layerfill.testimages.layer import BlobDir, Entry, LayerBlob, random_layer, write_layer

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image manifest written to a layout."""

    manifest: Descriptor  # carries the platform when the image is meant for an index
    config: Descriptor
    layers: tuple[LayerBlob, ...]


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


class OciLayout:
    """An OCI image layout directory being written; call `save()` to write index.json."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobDir(self.root / "blobs")
        (self.root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        self._tags: dict[str, Descriptor] = {}

    def add_layer(self, files: Mapping[str, Entry]) -> LayerBlob:
        return write_layer(self.blobs, files)

    def add_random_layer(self, size_bytes: int, seed: int) -> LayerBlob:
        return random_layer(self.blobs, size_bytes, seed)

    def write_json_blob(self, doc: Mapping[str, Any], media_type: str) -> Descriptor:
        digest, size = self.blobs.write_bytes(canonical_json(doc))
        return Descriptor(media_type, digest, size)

    def add_image(
        self,
        layers: Sequence[LayerBlob],
        platform: Platform,
        *,
        history: Sequence[str] | None = None,
        env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
        cmd: Sequence[str] = ("/bin/sh",),
        annotations: Mapping[str, str] | None = None,
    ) -> ImageRecord:
        """Write config and manifest blobs for `layers` (already in this layout's blob dir)."""
        if history is not None and len(history) != len(layers):
            raise ValueError(f"history has {len(history)} entries for {len(layers)} layers")
        config_doc: dict[str, Any] = {
            "created": EPOCH,
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {"Env": list(env), "Cmd": list(cmd)},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [
                {"created": EPOCH, "created_by": text}
                for text in (history or [f"layer {i}" for i in range(len(layers))])
            ],
        }
        if platform.variant:
            config_doc["variant"] = platform.variant
        config = self.write_json_blob(config_doc, mt.OCI_CONFIG)
        manifest_doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config.to_dict(),
            "layers": [layer.descriptor().to_dict() for layer in layers],
        }
        if annotations:
            manifest_doc["annotations"] = dict(annotations)
        written = self.write_json_blob(manifest_doc, mt.OCI_MANIFEST)
        manifest = Descriptor(written.media_type, written.digest, written.size, platform=platform)
        return ImageRecord(manifest, config, tuple(layers))

    def add_index(self, images: Sequence[ImageRecord]) -> Descriptor:
        """A multi-platform index over images written to this layout."""
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [image.manifest.to_dict() for image in images],
        }
        return self.write_json_blob(doc, mt.OCI_INDEX)

    def tag(self, tag: str, descriptor: Descriptor) -> None:
        """Name `descriptor` in index.json; a tag names one thing, so retagging replaces."""
        validate_tag(tag)
        self._tags[tag] = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size)

    def save(self) -> Path:
        entries = []
        for tag, d in sorted(self._tags.items()):
            entry = d.to_dict()
            entry["annotations"] = {REF_NAME_ANNOTATION: tag}
            entries.append(entry)
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        path = self.root / "index.json"
        path.write_bytes(canonical_json(doc))
        return path


def read_tags(layout_dir: Path) -> dict[str, Descriptor]:
    """Tags named in a layout's index.json (entries without a ref name are ignored)."""
    doc = json.loads((Path(layout_dir) / "index.json").read_bytes())
    tags: dict[str, Descriptor] = {}
    for entry in doc.get("manifests", []):
        name = (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION)
        if name:
            tags[name] = Descriptor(entry["mediaType"], entry["digest"], entry["size"])
    return tags

"""The named seed images: deterministic, so their digests are the same on every run and machine."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from layerfill.oci.manifest import Descriptor, Platform
from layerfill.testimages import debian
from layerfill.testimages.layer import LayerBlob
from layerfill.testimages.layout import ImageRecord, OciLayout

DEFAULT_LARGE_SIZE = 64 * 1024 * 1024
LARGE_SEED = 20240601
CATALOG_FILE = "catalog.json"
AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size: int
    media_type: str
    kind: Literal["config", "layer"]
    diff_id: str | None = None  # layers only


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    digest: str
    size: int
    media_type: str
    platform: str
    config: BlobInfo
    layers: list[BlobInfo]


@dataclass(frozen=True, slots=True)
class ImageInfo:
    repository: str
    tag: str
    layout_dir: str  # relative to the catalog root
    digest: str  # what the tag points at: an image manifest or an index
    media_type: str
    size: int
    manifests: list[ManifestInfo]  # the image manifests (the children, for an index)

    @property
    def name(self) -> str:
        return f"{self.repository}:{self.tag}"

    def blobs(self) -> list[BlobInfo]:
        """Unique config and layer blobs over every manifest, first-seen order."""
        seen: dict[str, BlobInfo] = {}
        for m in self.manifests:
            for blob in [m.config, *m.layers]:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())


@dataclass(slots=True)
class Catalog:
    root: Path
    base_layer: BlobInfo
    images: dict[str, ImageInfo] = field(default_factory=dict)  # keyed "repository:tag"

    def layout_path(self, name: str) -> Path:
        return self.root / self.images[name].layout_dir

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_layer": asdict(self.base_layer),
            "images": {name: asdict(info) for name, info in self.images.items()},
        }

    def save(self) -> Path:
        path = self.root / CATALOG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, root: Path) -> Catalog:
        doc = json.loads((Path(root) / CATALOG_FILE).read_text())
        images = {name: _image_info(info) for name, info in doc["images"].items()}
        return cls(Path(root), BlobInfo(**doc["base_layer"]), images)


def _image_info(doc: dict[str, Any]) -> ImageInfo:
    manifests = [
        ManifestInfo(
            **{k: v for k, v in m.items() if k not in ("config", "layers")},
            config=BlobInfo(**m["config"]),
            layers=[BlobInfo(**b) for b in m["layers"]],
        )
        for m in doc["manifests"]
    ]
    return ImageInfo(**{k: v for k, v in doc.items() if k != "manifests"}, manifests=manifests)


def _layer_info(layer: LayerBlob) -> BlobInfo:
    return BlobInfo(layer.digest, layer.size, layer.media_type, "layer", layer.diff_id)


def _manifest_info(image: ImageRecord) -> ManifestInfo:
    config = BlobInfo(image.config.digest, image.config.size, image.config.media_type, "config")
    return ManifestInfo(
        image.manifest.digest,
        image.manifest.size,
        image.manifest.media_type,
        str(image.manifest.platform),
        config,
        [_layer_info(layer) for layer in image.layers],
    )


def _app_files(name: str, arch: str | None = None) -> dict[str, bytes]:
    files = {
        f"opt/{name}/VERSION": b"1\n",
        f"opt/{name}/run.sh": f"#!/bin/sh\necho {name}\n".encode(),
    }
    if arch:
        files[f"opt/{name}/ARCH"] = f"{arch}\n".encode()
    return files


class _Builder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: dict[str, ImageInfo] = {}

    def layout(self, repository: str) -> OciLayout:
        path = self.root / repository
        if path.exists():
            shutil.rmtree(path)  # stale blobs from an earlier build would be pushed too
        return OciLayout(path)

    def record(self, layout: OciLayout, repository: str, tag: str, top: Descriptor, images: list[ImageRecord]) -> None:
        layout.tag(tag, top)
        layout.save()
        self.images[f"{repository}:{tag}"] = ImageInfo(
            repository,
            tag,
            repository,
            top.digest,
            top.media_type,
            top.size,
            [_manifest_info(image) for image in images],
        )

    def single(self, repository: str, tag: str, own_layer: str) -> LayerBlob:
        layout = self.layout(repository)
        base = layout.add_layer(debian.rootfs_files())
        app = layout.add_layer(_app_files(own_layer))
        image = layout.add_image([base, app], AMD64, history=["debian bookworm rootfs", f"{own_layer} files"])
        self.record(layout, repository, tag, image.manifest, [image])
        return base

    def multi(self, repository: str, tag: str) -> None:
        layout = self.layout(repository)
        base = layout.add_layer(debian.rootfs_files())
        images = []
        for platform in (AMD64, ARM64):
            own = layout.add_layer(_app_files("multi", platform.architecture))
            images.append(layout.add_image([base, own], platform, history=["debian bookworm rootfs", "multi files"]))
        index = layout.add_index(images)
        self.record(layout, repository, tag, index, images)

    def large(self, repository: str, tag: str, size: int) -> None:
        layout = self.layout(repository)
        layer = layout.add_random_layer(size, LARGE_SEED)
        image = layout.add_image([layer], AMD64, history=[f"{size} random bytes"])
        self.record(layout, repository, tag, image.manifest, [image])


def build_catalog(out: Path, *, large_size: int = DEFAULT_LARGE_SIZE) -> Catalog:
    """Write every seed image as an OCI layout under `out/<repository>/` and `out/catalog.json`.

    Images: demo/app-a:1 and demo/app-b:1 (shared Debian base + one own layer each), demo/multi:1 (an
    index of linux/amd64 and linux/arm64/v8 sharing the base), demo/large:1 (one random layer of
    `large_size` bytes; 0 leaves it out).
    """
    if large_size < 0:
        raise ValueError(f"large_size must be >= 0, got {large_size}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    builder = _Builder(root)
    base = builder.single("demo/app-a", "1", "app-a")
    builder.single("demo/app-b", "1", "app-b")
    builder.multi("demo/multi", "1")
    if large_size:
        builder.large("demo/large", "1", large_size)
    catalog = Catalog(root, _layer_info(base), builder.images)
    catalog.save()
    return catalog

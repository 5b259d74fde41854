"""Fresh single-platform images pushed to the upstream with the distribution API, with gzip layers of random
bytes: clients that skip layers they have (skopeo into an OCI layout) only recognise a layer when they store it
unchanged, and skopeo compresses uncompressed layers on the way into a layout, so they must be gzip already."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import dataclass

from bench.common import OCI_CONFIG, OCI_MANIFEST, ApiPusher, random_tar_layer

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Layer:
    data: bytes  # gzip
    diff_id: str  # sha256 of the uncompressed tar

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


def gzip_layer(size: int, seed: int | None = None) -> Layer:
    """A gzip tar of about `size` bytes (random content barely compresses)."""
    tar = random_tar_layer(size, random.randrange(1 << 30) if seed is None else seed)
    return Layer(gzip.compress(tar, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(tar).hexdigest())


@dataclass(frozen=True)
class Image:
    repository: str
    digest: str
    config: str
    config_size: int
    layers: tuple[tuple[str, int], ...]  # (digest, size)

    @property
    def blobs(self) -> list[str]:
        return [self.config, *(d for d, _ in self.layers)]

    @property
    def layer_bytes(self) -> int:
        return sum(s for _, s in self.layers)


def push_image(registry: str, repository: str, layers: list[Layer], mounted: list[tuple[Layer, str]] = ()) -> Image:  # type: ignore[assignment]
    """`mounted` layers (already in the upstream under another repository) first, then `layers`, tag `1`."""
    pusher = ApiPusher(registry)
    try:
        every = []
        for layer, source in mounted:
            pusher.mount(repository, layer.digest, source)
            every.append(layer)
        for layer in layers:
            pusher.blob(repository, layer.data)
            every.append(layer)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"repo": repository}},
                             "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in every]}},
                            sort_keys=True, separators=(",", ":")).encode()  # fmt: skip
        config_digest = pusher.blob(repository, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": x.digest, "size": x.size} for x in every],
        }, sort_keys=True, separators=(",", ":")).encode()  # fmt: skip
        r = pusher.session.put(f"{pusher.base}/v2/{repository}/manifests/1", data=manifest, timeout=60,
                               headers={"Content-Type": OCI_MANIFEST})  # fmt: skip
        r.raise_for_status()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        return Image(repository, digest, config_digest, len(config), tuple((x.digest, x.size) for x in every))
    finally:
        pusher.close()


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Index:
    repository: str
    digest: str
    children: dict[str, Image]  # architecture -> image


def push_index(registry: str, repository: str, architectures: list[str], layer_size: int = 64 * 1024) -> Index:
    """A fresh OCI index tagged `1` over one single-layer image per architecture (all content new)."""
    children = {}
    for arch in architectures:
        children[arch] = push_image(registry, repository, [gzip_layer(layer_size)])
    pusher = ApiPusher(registry)
    try:
        index = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": img.digest, "size": _manifest_size(pusher, img),
                           "platform": {"os": "linux", "architecture": arch}} for arch, img in children.items()],
        }, sort_keys=True, separators=(",", ":")).encode()  # fmt: skip
        r = pusher.session.put(f"{pusher.base}/v2/{repository}/manifests/1", data=index, timeout=60,
                               headers={"Content-Type": OCI_INDEX})  # fmt: skip
        r.raise_for_status()
        return Index(repository, "sha256:" + hashlib.sha256(index).hexdigest(), children)
    finally:
        pusher.close()


def _manifest_size(pusher: ApiPusher, img: Image) -> int:
    r = pusher.session.get(f"{pusher.base}/v2/{img.repository}/manifests/{img.digest}",
                           headers={"Accept": OCI_MANIFEST}, timeout=60)  # fmt: skip
    r.raise_for_status()
    return len(r.content)

"""Images with content nobody else has: a random layer of a chosen size, pushed to the upstream. Their blobs
are certainly absent from the shared cache, so a fill must download them (the seed catalog is deterministic
and its blobs may be cached already by earlier tests)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from layerfill.testimages.catalog import AMD64
from layerfill.testimages.layout import OciLayout
from layerfill.testimages.push import push_image


@dataclass(frozen=True)
class PushedImage:
    repository: str
    digest: str  # the manifest
    config_digest: str
    layer_digest: str
    layer_size: int


def push_random_image(registry: str, repository: str, workdir: Path, size: int) -> PushedImage:
    layout = OciLayout(workdir)
    layer = layout.add_random_layer(size, random.randrange(1 << 62))
    image = layout.add_image([layer], AMD64, history=[f"{size} random bytes"])
    layout.tag("1", image.manifest)
    layout.save()
    push_image(workdir, "1", registry, repository)
    return PushedImage(repository, image.manifest.digest, image.config.digest, layer.digest, layer.size)

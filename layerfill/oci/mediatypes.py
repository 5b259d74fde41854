"""Media types of OCI and Docker v2 manifests, indexes, configs and layers."""

from __future__ import annotations

# OCI image-spec.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# Docker image manifest v2 schema 2 and manifest list.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# Docker schema 1: deprecated, recognised only to be refused.
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES: frozenset[str] = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: frozenset[str] = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
SCHEMA1_TYPES: frozenset[str] = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST})
CONFIG_TYPES: frozenset[str] = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES: frozenset[str] = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        DOCKER_LAYER_GZIP,
        DOCKER_LAYER_FOREIGN_GZIP,
    }
)
# Layers that registries are not allowed to (re)distribute: they are fetched from their `urls`.
FOREIGN_LAYER_TYPES: frozenset[str] = frozenset(
    {
        DOCKER_LAYER_FOREIGN_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    }
)

# Content types a registry may answer with when it does not know better.
GENERIC_CONTENT_TYPES: frozenset[str] = frozenset(
    {"", "application/json", "application/octet-stream", "text/plain", "binary/octet-stream"}
)

# Accept header for manifest GET/HEAD: every manifest and index type we can plan, preferred first.
ACCEPT_MANIFESTS = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST],
)


def base_type(content_type: str | None) -> str:
    """The media type without parameters (`; charset=utf-8`), lower-cased; '' for None."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_manifest(media_type: str | None) -> bool:
    return base_type(media_type) in MANIFEST_TYPES


def is_index(media_type: str | None) -> bool:
    return base_type(media_type) in INDEX_TYPES


def is_foreign_layer(media_type: str | None) -> bool:
    return base_type(media_type) in FOREIGN_LAYER_TYPES

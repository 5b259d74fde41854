"""Object keys of CNCF distribution's storage layout (pure: no I/O).

Under `<root>/docker/registry/v2/`:
    blobs/<alg>/<2 hex>/<hex>/data                                  blob and manifest bytes
    repositories/<name>/_layers/<alg>/<hex>/link                    blob linked into a repository
    repositories/<name>/_manifests/revisions/<alg>/<hex>/link       manifest linked into a repository
    repositories/<name>/_manifests/tags/<tag>/current/link          tag -> manifest digest
    repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link    every digest the tag has named
A link holds `<alg>:<hex>` with no newline. With the S3 driver the root loses its leading slash, and a
root of "/" adds no prefix at all.

Every name and digest is validated against the OCI grammar before it becomes part of a key, so an
event cannot reach another part of the bucket.
"""

from __future__ import annotations

from layerfill.oci.reference import Digest, validate_repository, validate_tag

V2 = "docker/registry/v2/"
# Directories distribution keeps inside a repository; repository path components never start with "_".
REPOSITORY_MARKERS = frozenset({"_layers", "_manifests", "_uploads"})


def storage_prefix(root: str) -> str:
    """`<root without slashes at either end>/docker/registry/v2/`, or just `docker/registry/v2/` for "/"."""
    if not isinstance(root, str):
        raise ValueError(f"s3.root_directory must be a string, got {type(root).__name__}")
    trimmed = root.strip("/")
    if not trimmed:
        return V2
    if any(part in ("", ".", "..") for part in trimmed.split("/")):
        raise ValueError(f"s3.root_directory {root!r} has an empty, '.' or '..' path component")
    return f"{trimmed}/{V2}"


def _digest(digest: str | Digest) -> Digest:
    return digest if isinstance(digest, Digest) else Digest.parse(digest)


def blob_data_key(root: str, digest: str | Digest) -> str:
    d = _digest(digest)
    return f"{storage_prefix(root)}blobs/{d.algorithm}/{d.hex[:2]}/{d.hex}/data"


def repositories_prefix(root: str) -> str:
    return f"{storage_prefix(root)}repositories/"


def repository_prefix(root: str, repository: str) -> str:
    return f"{repositories_prefix(root)}{validate_repository(repository)}/"


def layer_link_key(root: str, repository: str, digest: str | Digest) -> str:
    d = _digest(digest)
    return f"{repository_prefix(root, repository)}_layers/{d.algorithm}/{d.hex}/link"


def manifest_revisions_prefix(root: str, repository: str, algorithm: str = "sha256") -> str:
    return f"{repository_prefix(root, repository)}_manifests/revisions/{algorithm}/"


def manifest_revision_link_key(root: str, repository: str, digest: str | Digest) -> str:
    d = _digest(digest)
    return f"{manifest_revisions_prefix(root, repository, d.algorithm)}{d.hex}/link"


def tags_prefix(root: str, repository: str) -> str:
    return f"{repository_prefix(root, repository)}_manifests/tags/"


def tag_link_key(root: str, repository: str, tag: str) -> str:
    return f"{tags_prefix(root, repository)}{validate_tag(tag)}/current/link"


def tag_index_link_key(root: str, repository: str, tag: str, digest: str | Digest) -> str:
    d = _digest(digest)
    return f"{tags_prefix(root, repository)}{validate_tag(tag)}/index/{d.algorithm}/{d.hex}/link"


def link_content(digest: str | Digest) -> bytes:
    return str(_digest(digest)).encode("ascii")


def parse_link(content: bytes) -> str:
    """The digest a link file points at; raises InvalidReference (a ValueError) for anything else."""
    return str(Digest.parse(content.decode("ascii", errors="replace").strip(), "link"))

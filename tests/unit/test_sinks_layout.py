import pytest

from layerfill.oci.reference import InvalidReference
from layerfill.sinks.layout import (
    blob_data_key,
    layer_link_key,
    link_content,
    manifest_revision_link_key,
    manifest_revisions_prefix,
    parse_link,
    repositories_prefix,
    storage_prefix,
    tag_link_key,
    tags_prefix,
)

pytestmark = pytest.mark.unit

HEX = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
DIGEST = f"sha256:{HEX}"
HEX512 = "fe" + "0" * 126


@pytest.mark.parametrize(
    ("root", "prefix"),
    [
        ("/", "docker/registry/v2/"),
        ("", "docker/registry/v2/"),
        ("/proxy", "proxy/docker/registry/v2/"),
        ("proxy/", "proxy/docker/registry/v2/"),
        ("/a/b/", "a/b/docker/registry/v2/"),
    ],
)
def test_storage_prefix_drops_outer_slashes(root: str, prefix: str) -> None:
    assert storage_prefix(root) == prefix


@pytest.mark.parametrize("root", ["/a//b", "/a/../b", "/./x"])
def test_storage_prefix_refuses_odd_components(root: str) -> None:
    with pytest.raises(ValueError, match="root_directory"):
        storage_prefix(root)


def test_blob_data_key() -> None:
    assert blob_data_key("/proxy", DIGEST) == f"proxy/docker/registry/v2/blobs/sha256/ab/{HEX}/data"
    assert blob_data_key("/", DIGEST) == f"docker/registry/v2/blobs/sha256/ab/{HEX}/data"
    assert blob_data_key("/", f"sha512:{HEX512}") == f"docker/registry/v2/blobs/sha512/fe/{HEX512}/data"


def test_repository_keys() -> None:
    base = "proxy/docker/registry/v2/repositories/library/debian"
    assert repositories_prefix("/proxy") == "proxy/docker/registry/v2/repositories/"
    assert layer_link_key("/proxy", "library/debian", DIGEST) == f"{base}/_layers/sha256/{HEX}/link"
    assert (
        manifest_revision_link_key("/proxy", "library/debian", DIGEST)
        == f"{base}/_manifests/revisions/sha256/{HEX}/link"
    )
    assert manifest_revisions_prefix("/proxy", "library/debian") == f"{base}/_manifests/revisions/sha256/"
    assert tags_prefix("/proxy", "library/debian") == f"{base}/_manifests/tags/"
    assert tag_link_key("/proxy", "library/debian", "12.1-slim") == f"{base}/_manifests/tags/12.1-slim/current/link"


@pytest.mark.parametrize("repository", ["../etc", "Library/debian", "a//b", "/abs", "a/_layers", "a b", ""])
def test_bad_repository_names_never_become_keys(repository: str) -> None:
    with pytest.raises(InvalidReference, match="repository"):
        layer_link_key("/", repository, DIGEST)


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "a" * 32, f"sha256:{HEX.upper()}", f"sha256:{HEX}/.."])
def test_bad_digests_never_become_keys(digest: str) -> None:
    with pytest.raises(InvalidReference, match="digest"):
        blob_data_key("/", digest)


def test_bad_tag_never_becomes_a_key() -> None:
    with pytest.raises(InvalidReference, match="tag"):
        tag_link_key("/", "repo", "../x")


def test_link_content_has_no_newline_and_round_trips() -> None:
    assert link_content(DIGEST) == DIGEST.encode()
    assert parse_link(link_content(DIGEST)) == DIGEST
    assert parse_link(DIGEST.encode() + b"\n") == DIGEST  # tolerated when reading links others wrote


@pytest.mark.parametrize("content", [b"", b"garbage", b"sha256:zz", b"\xff\xfe"])
def test_parse_link_refuses_non_digests(content: bytes) -> None:
    with pytest.raises(InvalidReference, match="link"):
        parse_link(content)

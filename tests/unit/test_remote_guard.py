import pytest

from layerfill.remote.errors import InvalidInput
from layerfill.remote.guard import (
    check_base_url,
    check_digest,
    check_reference,
    check_repository,
    check_upstream_prefix,
)

pytestmark = pytest.mark.unit

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize("name", ["alpine", "library/alpine", "a.b_c-d/e", "x/y/z"])
def test_repository_accepted(name: str) -> None:
    assert check_repository(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../etc",
        "a/../b",
        "a/..",
        "A",
        "a b",
        "a%2f",
        "/a",
        "a/",
        "a//b",
        "./a",
        "a/./b",
        "a\\b",
        "a\x00",
        5,
        "a" * 256,
    ],
)
def test_repository_refused(name: object) -> None:
    with pytest.raises(InvalidInput) as info:
        check_repository(name)
    assert info.value.field == "repository"


@pytest.mark.parametrize("digest", [SHA, "sha512:" + "0" * 128])
def test_digest_accepted(digest: str) -> None:
    assert check_digest(digest) == digest


@pytest.mark.parametrize(
    "digest", ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 32, "sha256:../" + "a" * 61, None, ""]
)
def test_digest_refused(digest: object) -> None:
    with pytest.raises(InvalidInput, match="digest"):
        check_digest(digest)


@pytest.mark.parametrize("reference", ["latest", "v1.2.3", "Release_1", SHA])
def test_reference_accepted(reference: str) -> None:
    assert check_reference(reference) == reference


@pytest.mark.parametrize("reference", ["..", "a..b", ".hidden", "-x", "a/b", "", "sha256:zz", "x" * 129])
def test_reference_refused(reference: str) -> None:
    with pytest.raises(InvalidInput, match="reference"):
        check_reference(reference)


@pytest.mark.parametrize(("prefix", "expected"), [("", ""), ("library", "library/"), ("library/", "library/")])
def test_upstream_prefix(prefix: str, expected: str) -> None:
    assert check_upstream_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["../x", "/library", "Lib"])
def test_upstream_prefix_refused(prefix: str) -> None:
    with pytest.raises(InvalidInput, match="upstream_prefix"):
        check_upstream_prefix(prefix)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://registry-1.docker.io", "https://registry-1.docker.io"),
        ("http://127.0.0.1:5000/", "http://127.0.0.1:5000"),
        ("https://art.example/artifactory/api/docker/hub/", "https://art.example/artifactory/api/docker/hub"),
    ],
)
def test_base_url_accepted(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    "url", ["ftp://h", "h:5000", "https://", "https://h/?a=b", "https://h/#x", "https://h:99999", "https://h/a/../b"]
)
def test_base_url_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="base_url"):
        check_base_url(url)


def test_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(InvalidInput) as info:
        check_base_url("https://bob:hunter2pass@reg.example")
    assert "hunter2pass" not in str(info.value)
    assert "credentials" in str(info.value)

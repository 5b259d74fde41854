import pytest

from layerfill.oci.reference import (
    Digest,
    ImageReference,
    InvalidReference,
    is_digest,
    validate_digest,
    validate_registry,
    validate_repository,
    validate_tag,
    validate_tag_or_digest,
)

pytestmark = pytest.mark.unit

HEX64 = "a" * 64
HEX128 = "0123456789abcdef" * 8


@pytest.mark.parametrize(
    "name",
    [
        "debian",
        "library/debian",
        "demo/app-a",
        "a/b/c/d",
        "foo.bar",
        "foo_bar",
        "foo__bar",
        "foo---bar",
        "0",
        "a" * 255,
        "x/" * 126 + "abc",
    ],
)
def test_repository_accepts(name: str) -> None:
    assert validate_repository(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("Debian", "upper case"),
        ("..", "dot-dot"),
        ("a/../b", "traversal component"),
        ("a/..", "trailing traversal"),
        ("../a", "leading traversal"),
        ("a..b", "double dot"),
        ("%2e%2e/a", "percent-escaped dots"),
        ("a%2fb", "percent-escaped slash"),
        ("/abs", "absolute"),
        ("a/", "trailing slash"),
        ("a//b", "empty component"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\n", "trailing newline"),
        ("\na", "leading newline"),
        ("a b", "space"),
        ("_a", "leading separator"),
        ("a_", "trailing separator"),
        ("a___b", "three underscores"),
        ("a.-b", "mixed separators"),
        ("a:b", "colon"),
        ("a@b", "at"),
        ("é", "non-ASCII"),
        ("\uff41", "full-width letter"),
        ("a" * 256, "too long"),
    ],
)
def test_repository_rejects(name: str, why: str) -> None:
    with pytest.raises(InvalidReference) as info:
        validate_repository(name)
    assert info.value.field == "repository", why
    assert info.value.value == name
    assert "repository" in str(info.value)


def test_repository_rejects_non_string_and_names_custom_field() -> None:
    with pytest.raises(InvalidReference, match="must be a string") as info:
        validate_repository(b"debian", field="event.repository")
    assert info.value.field == "event.repository"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("tag", ["latest", "1", "v1.2.3", "_x", "A-b_c.d", "a" * 128])
def test_tag_accepts(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    "tag", ["", ".hidden", "-x", "a" * 129, "a/b", "..", "a:b", "a b", "a\x00", "a\n", "tag\\x", "ü"]
)
def test_tag_rejects(tag: str) -> None:
    with pytest.raises(InvalidReference) as info:
        validate_tag(tag)
    assert info.value.field == "tag"


@pytest.mark.parametrize("digest", [f"sha256:{HEX64}", f"sha512:{HEX128}"])
def test_digest_accepts(digest: str) -> None:
    assert validate_digest(digest) == digest
    assert is_digest(digest)
    parsed = Digest.parse(digest)
    assert str(parsed) == digest
    assert parsed.algorithm == digest.split(":")[0]
    assert parsed.hex == digest.split(":")[1]


@pytest.mark.parametrize(
    "digest",
    [
        "",
        HEX64,
        f"sha256:{'A' * 64}",
        f"sha256:{'a' * 63}",
        f"sha256:{'a' * 65}",
        f"sha256:{HEX128}",
        f"sha512:{HEX64}",
        f"md5:{'a' * 32}",
        f"sha384:{'a' * 96}",
        f"SHA256:{HEX64}",
        f"sha256:{'g' * 64}",
        f"sha256:{HEX64}\n",
        f"sha256:../{'a' * 61}",
        f"sha256:{HEX64}/../x",
    ],
)
def test_digest_rejects(digest: str) -> None:
    with pytest.raises(InvalidReference) as info:
        validate_digest(digest)
    assert info.value.field == "digest"
    assert not is_digest(digest)


def test_digest_error_names_field_and_length() -> None:
    with pytest.raises(InvalidReference, match=r"invalid layers\[0\]\.digest .*64 hex characters, got 3"):
        Digest.parse("sha256:abc", field="layers[0].digest")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("latest", True), (f"sha256:{HEX64}", True), ("sha256:abc", False), ("a/b", False)],
)
def test_tag_or_digest(value: str, ok: bool) -> None:
    if ok:
        assert validate_tag_or_digest(value) == value
    else:
        with pytest.raises(InvalidReference) as info:
            validate_tag_or_digest(value)
        assert info.value.field == "reference"


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:5000",
        "127.0.0.1:25000",
        "registry-1.docker.io",
        "quay.io",
        "Example.COM:443",
        "[::1]:5000",
        "[fe80::1]",
        "a" * 63 + ".com",
    ],
)
def test_registry_accepts(host: str) -> None:
    assert validate_registry(host) == host


@pytest.mark.parametrize(
    "host",
    [
        "",
        "host:",
        "host:0",
        "host:65536",
        "host:80a",
        "host:-1",
        "-host",
        "host-",
        "a..b",
        ".host",
        "host/path",
        "user@host",
        "host name",
        "ho_st",
        "::1",
        "[::1",
        "[::1]x",
        "[zz::1]",
        "a" * 64 + ".com",
        "h\x00st",
        "host\n",
    ],
)
def test_registry_rejects(host: str) -> None:
    with pytest.raises(InvalidReference) as info:
        validate_registry(host)
    assert info.value.field == "registry"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/demo/app-a:1", ImageReference("127.0.0.1:5000", "demo/app-a", "1", None)),
        ("localhost/x", ImageReference("localhost", "x", None, None)),
        (
            f"quay.io/a/b@sha256:{HEX64}",
            ImageReference("quay.io", "a/b", None, f"sha256:{HEX64}"),
        ),
        (
            f"host:1/a:t@sha256:{HEX64}",
            ImageReference("host:1", "a", "t", f"sha256:{HEX64}"),
        ),
    ],
)
def test_image_reference_parse(text: str, expected: ImageReference) -> None:
    parsed = ImageReference.parse(text)
    assert parsed == expected
    assert str(parsed) == text


def test_image_reference_manifest_reference() -> None:
    assert ImageReference.parse("h.io/a").reference == "latest"
    assert ImageReference.parse("h.io/a:v1").reference == "v1"
    assert ImageReference.parse(f"h.io/a:v1@sha256:{HEX64}").reference == f"sha256:{HEX64}"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("debian:12", "image"),
        ("library/debian", "image"),
        ("h.io/A", "image.repository"),
        ("h.io/a:.x", "image.tag"),
        ("h.io/a@sha256:xyz", "image.digest"),
        ("h_x.io/a", "image.registry"),
        ("h.io/../a", "image.repository"),
    ],
)
def test_image_reference_rejects(text: str, field: str) -> None:
    with pytest.raises(InvalidReference) as info:
        ImageReference.parse(text)
    assert info.value.field == field

import hashlib

import pytest

from layerfill.oci.digest import DigestMismatch, DigestVerifier, SizeMismatch, digest_of
from layerfill.oci.reference import Digest, InvalidReference

pytestmark = pytest.mark.unit

DATA = b"hello layer " * 1000
SHA256 = "sha256:" + hashlib.sha256(DATA).hexdigest()
SHA512 = "sha512:" + hashlib.sha512(DATA).hexdigest()


def feed(verifier: DigestVerifier, data: bytes, chunk: int = 7) -> DigestVerifier:
    for start in range(0, len(data), chunk):
        verifier.update(memoryview(data)[start : start + chunk])
    return verifier


def test_digest_of() -> None:
    assert digest_of(DATA) == SHA256
    assert digest_of(DATA, "sha512") == SHA512
    assert digest_of(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("expected", [SHA256, Digest.parse(SHA256)])
def test_verify_ok_in_chunks(expected: str | Digest) -> None:
    verifier = feed(DigestVerifier(), DATA)
    assert verifier.size == len(DATA)
    assert verifier.digest == SHA256
    assert verifier.verify(expected, len(DATA)) == SHA256
    assert verifier.verify(expected) == SHA256


def test_for_digest_uses_its_algorithm() -> None:
    verifier = feed(DigestVerifier.for_digest(SHA512), DATA)
    assert verifier.algorithm == "sha512"
    assert verifier.verify(SHA512, len(DATA)) == SHA512


def test_digest_mismatch() -> None:
    verifier = feed(DigestVerifier(), DATA + b"x")
    with pytest.raises(DigestMismatch) as info:
        verifier.verify(SHA256)
    assert info.value.expected == SHA256
    assert info.value.actual == digest_of(DATA + b"x")
    assert isinstance(info.value, ValueError)


def test_size_checked_before_digest() -> None:
    verifier = feed(DigestVerifier(), DATA[:-1])
    with pytest.raises(SizeMismatch) as info:
        verifier.verify(SHA256, len(DATA))
    assert (info.value.expected, info.value.actual) == (len(DATA), len(DATA) - 1)


def test_max_size_stops_early() -> None:
    verifier = DigestVerifier(max_size=10)
    verifier.update(b"0123456789")
    with pytest.raises(SizeMismatch, match="more than 10 bytes"):
        verifier.update(b"x")


def test_algorithm_mismatch_is_an_error() -> None:
    verifier = feed(DigestVerifier("sha256"), DATA)
    with pytest.raises(ValueError, match="sha512"):
        verifier.verify(SHA512)


@pytest.mark.parametrize("bad", ["md5", "sha1", ""])
def test_unsupported_algorithm(bad: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        DigestVerifier(bad)


def test_verify_rejects_malformed_expected_digest() -> None:
    with pytest.raises(InvalidReference):
        DigestVerifier().verify("sha256:nothex")

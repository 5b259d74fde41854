"""Incremental digest and size verification of streamed content."""

from __future__ import annotations

import hashlib

from layerfill.oci.reference import Digest


class DigestMismatch(ValueError):
    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"digest mismatch: expected {expected}, got {actual}")


class SizeMismatch(ValueError):
    def __init__(self, expected: int, actual: int, *, exceeded: bool = False) -> None:
        self.expected = expected
        self.actual = actual
        detail = f"more than {expected} bytes received" if exceeded else f"got {actual} bytes"
        super().__init__(f"size mismatch: expected {expected} bytes, {detail}")


class DigestVerifier:
    """Hash chunks as they stream by; `verify` checks the final digest and size.

    With `max_size` set, `update` fails as soon as more bytes arrive than expected, so an
    oversized body is cut off early instead of being read to the end.
    """

    def __init__(self, algorithm: str = "sha256", *, max_size: int | None = None) -> None:
        if algorithm not in ("sha256", "sha512"):
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.max_size = max_size
        self._hash = hashlib.new(algorithm)
        self.size = 0

    @classmethod
    def for_digest(cls, expected: str | Digest, *, max_size: int | None = None) -> DigestVerifier:
        """A verifier using the algorithm of `expected`."""
        parsed = expected if isinstance(expected, Digest) else Digest.parse(expected)
        return cls(parsed.algorithm, max_size=max_size)

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self.size += len(chunk)
        if self.max_size is not None and self.size > self.max_size:
            raise SizeMismatch(self.max_size, self.size, exceeded=True)
        self._hash.update(chunk)

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def verify(self, expected_digest: str | Digest, expected_size: int | None = None) -> str:
        """Raise SizeMismatch or DigestMismatch unless the content seen matches; return the digest."""
        expected = expected_digest if isinstance(expected_digest, Digest) else Digest.parse(expected_digest)
        if expected_size is not None and self.size != expected_size:
            raise SizeMismatch(expected_size, self.size)
        if expected.algorithm != self.algorithm:
            raise ValueError(f"verifier hashes with {self.algorithm} but the expected digest uses {expected.algorithm}")
        actual = self.digest
        if actual != str(expected):
            raise DigestMismatch(str(expected), actual)
        return actual


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """Digest string (`sha256:<hex>`) of in-memory bytes such as a manifest."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"

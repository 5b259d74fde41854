"""A file-like view of a chunk stream that is verified before its last byte is handed out (pure: no I/O).

Uploaders such as minio's `put_object` finish an object only after reading the last byte they expect.
This reader checks digest and size in the very read that reaches the expected size (confirming the
source has nothing more), or at end of stream when the source is short, and raises instead of returning
those bytes. So an upload of wrong content always fails before it can complete.

A source that verifies the same digest itself (`verifies_digest` true and the same `digest`: the upstream's
BlobStream, which raises at its end when the bytes it streamed do not hash to it) is not hashed a second time:
the reader then counts the bytes, and still pulls the source to its end before handing out the last byte, so the
source's own check fails the read just as this one would. A fill profile showed each byte hashed three times
(the stream, this reader, the S3 request's signature) on the cores the S3 server also needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from layerfill.oci.digest import DigestMismatch, DigestVerifier, SizeMismatch
from layerfill.sinks.base import SinkIntegrityError


class SourceFailed(Exception):
    """Carries an error raised by the blob source through code that catches every exception (the
    uploader aborts and re-raises), so the sink can re-raise the original unchanged."""

    def __init__(self, original: Exception) -> None:
        super().__init__(f"blob source failed: {type(original).__name__}: {original}")
        self.original = original


class VerifyingReader:
    def __init__(self, chunks: Iterable[bytes], digest: str, size: int) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._digest = digest
        self._size = size
        self._verifier = DigestVerifier.for_digest(digest, max_size=size)  # the digest parsed here either way
        self.hashes = not source_verifies(chunks, digest)
        self._received = 0
        self._pending = memoryview(b"")  # hashed but not yet handed out
        self._exhausted = False
        self._verified = False

    @property
    def bytes_received(self) -> int:
        """Bytes taken from the source so far (all of them hashed, here or by the source)."""
        return self._received

    def read(self, n: int | None = -1) -> bytes:
        limit = self._size + 1 if n is None or n < 0 else n  # the verifier stops anything past the size
        parts: list[memoryview] = []
        have = 0
        while have < limit:
            if not self._pending:
                chunk = self._pull()
                if chunk is None:
                    break
                self._pending = chunk
            take = min(limit - have, len(self._pending))
            parts.append(self._pending[:take])
            self._pending = self._pending[take:]
            have += take
        if self._exhausted or self._received == self._size:
            self.finish()
        return b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """`read` into the caller's buffer: each chunk is copied in and dropped, so a whole part is held once (the
        buffer) rather than twice (its chunks, then their join). Returns the bytes written; 0 at end of stream."""
        out = memoryview(buffer).cast("B")
        have = 0
        while have < len(out):
            if not self._pending:
                chunk = self._pull()
                if chunk is None:
                    break
                self._pending = chunk
            take = min(len(out) - have, len(self._pending))
            out[have : have + take] = self._pending[:take]
            self._pending = self._pending[take:]
            have += take
        out.release()
        if self._exhausted or self._received == self._size:
            self.finish()
        return have

    def finish(self) -> None:
        """Drain what is left of the source (unread bytes are dropped) and check digest and size;
        raise SinkIntegrityError on a mismatch. The verifier cuts the source off past the size."""
        if self._verified:
            return
        while self._pull() is not None:
            pass
        if not self.hashes:  # the source checked the digest when it reached its end, just now
            if self._received != self._size:
                raise SinkIntegrityError(f"{self._digest}: {SizeMismatch(self._size, self._received)}")
            self._verified = True
            return
        try:
            self._verifier.verify(self._digest, self._size)
        except DigestMismatch as exc:
            raise SinkIntegrityError(str(exc)) from exc
        except SizeMismatch as exc:
            raise SinkIntegrityError(f"{self._digest}: {exc}") from exc
        self._verified = True

    def _pull(self) -> memoryview | None:
        """The next non-empty chunk, hashed; None at end of stream."""
        if self._exhausted:
            return None
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._exhausted = True
                return None
            except Exception as exc:
                raise SourceFailed(exc) from exc
            if not chunk:
                continue
            self._received += len(chunk)
            if self._received > self._size:  # cut off: the rest is never read
                raise SinkIntegrityError(f"{self._digest}: {SizeMismatch(self._size, self._received, exceeded=True)}")
            if self.hashes:
                self._verifier.update(chunk)
            return memoryview(chunk)


def source_verifies(chunks: Any, digest: str) -> bool:
    """Whether `chunks` raises at its end unless its bytes hash to `digest` (layerfill.remote.blob.BlobStream)."""
    return getattr(chunks, "verifies_digest", False) is True and getattr(chunks, "digest", None) == digest

"""A file-like view of a chunk stream that is verified before its last byte is handed out (pure: no I/O).

Uploaders such as minio's `put_object` finish an object only after reading the last byte they expect.
This reader checks digest and size in the very read that reaches the expected size (confirming the
source has nothing more), or at end of stream when the source is short, and raises instead of returning
those bytes. So an upload of wrong content always fails before it can complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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
        self._verifier = DigestVerifier.for_digest(digest, max_size=size)
        self._pending = memoryview(b"")  # hashed but not yet handed out
        self._exhausted = False
        self._verified = False

    @property
    def bytes_received(self) -> int:
        """Bytes taken from the source so far (all of them hashed)."""
        return self._verifier.size

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
        if self._exhausted or self._verifier.size == self._size:
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
        if self._exhausted or self._verifier.size == self._size:
            self.finish()
        return have

    def finish(self) -> None:
        """Drain what is left of the source (unread bytes are dropped) and check digest and size;
        raise SinkIntegrityError on a mismatch. The verifier cuts the source off past the size."""
        if self._verified:
            return
        while self._pull() is not None:
            pass
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
            try:
                self._verifier.update(chunk)
            except SizeMismatch as exc:
                raise SinkIntegrityError(f"{self._digest}: {exc}") from exc
            return memoryview(chunk)

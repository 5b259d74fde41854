"""A blob body as an iterator of chunks, verified as it streams and resumed when the connection breaks.

The bytes are passed through exactly as stored (`decode_content=False`): a gzip layer served with
`Content-Encoding: gzip` by some blob stores must not be decompressed, or its digest would not match.
When the body breaks mid-way (reset, timeout, fewer bytes than Content-Length), the stream asks again
with `Range: bytes=<received>-`; a 206 continues where it stopped, a 200 (Range ignored) is read again
with the bytes already delivered skipped. The final digest check covers the joined result either way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Generator, Iterator
from typing import ClassVar

import requests
import urllib3.exceptions
from requests import Response

from layerfill.remote.errors import BodyInterrupted, DigestMismatch, UpstreamError
from layerfill.remote.transport.base import content_length, translate_read_error
from layerfill.remote.transport.redact import get_logger, redact_url
from layerfill.remote.transport.retry import RetryPolicy

log = get_logger(__name__)

CHUNK_SIZE = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_READ_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)

# opener(offset) -> a 200 response (offset 0) or a 200/206 response to `Range: bytes=<offset>-`.
Opener = Callable[[int], Response]


class BlobStream(Iterator[bytes]):
    """Iterate to get the chunks; `size` is the Content-Length (None if the upstream sent none).

    Iterating to the end verifies the digest (DigestMismatch) and the size; the last chunk is handed
    out before that check, so consumers must read until StopIteration before trusting what they wrote.
    """

    # Read by layerfill.sinks.verified_stream: a sink need not hash these bytes again.
    verifies_digest: ClassVar[bool] = True

    def __init__(self, *, digest: str, opener: Opener, retry: RetryPolicy, chunk_size: int = CHUNK_SIZE) -> None:
        self.digest = digest
        self.size: int | None = None
        self.bytes_read = 0
        self.resumes = 0
        self.url = ""
        self._opener = opener
        self._retry = retry
        self._chunk_size = chunk_size
        self._hash = hashlib.new(digest.split(":", 1)[0])
        self._response: Response | None = None
        self._chunks: Generator[bytes, None, None] | None = None

    def open(self) -> None:
        """Send the first request; typed errors (NotFound, Unauthorized, ...) surface here."""
        self._response = self._opener(0)
        self.size = content_length(self._response)
        self.url = redact_url(self._response.url)

    def __iter__(self) -> BlobStream:
        return self

    def __next__(self) -> bytes:
        if self._chunks is None:
            if self._response is None:
                raise RuntimeError("BlobStream.open() must be called before iterating")
            self._chunks = self._generate()
        return next(self._chunks)

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()
        if self._response is not None:
            self._response.close()
            self._response = None

    def _generate(self) -> Generator[bytes, None, None]:
        attempt = 1
        skip = 0
        while True:
            response = self._response
            assert response is not None
            try:
                for chunk in response.raw.stream(self._chunk_size, decode_content=False):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    if not chunk:
                        continue
                    self._account(chunk)
                    yield chunk
                break
            except _READ_ERRORS as exc:
                error = translate_read_error(exc, response.url)
            response.close()
            if not error.transient or attempt >= self._retry.max_attempts:
                raise error
            wait = self._retry.backoff(attempt)
            log.info(
                "blob %s broke after %d bytes (%s); resuming in %.3f s (attempt %d of %d)",
                self.digest,
                self.bytes_read,
                error.message,
                wait,
                attempt + 1,
                self._retry.max_attempts,
            )
            self._retry.sleep(wait)
            attempt += 1
            self.resumes += 1
            self._response, skip = self._reopen()
        self._finish()

    def _account(self, chunk: bytes) -> None:
        self.bytes_read += len(chunk)
        if self.size is not None and self.bytes_read > self.size:
            raise UpstreamError(f"blob {self.digest} is longer than its Content-Length {self.size}", url=self.url)
        self._hash.update(chunk)

    def _reopen(self) -> tuple[Response, int]:
        """A response positioned at `bytes_read`, and how many leading bytes of it to drop."""
        offset = self.bytes_read
        response = self._opener(offset)
        if offset == 0 or response.status_code == 200:
            total = content_length(response)
            if self.size is not None and total is not None and total != self.size:
                response.close()
                raise UpstreamError(f"blob {self.digest} changed size on retry: {self.size} then {total}", url=self.url)
            return response, offset
        match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
        start = int(match.group(1)) if match else -1
        total_text = match.group(3) if match else "*"
        if start != offset or (self.size is not None and total_text not in ("*", str(self.size))):
            response.close()
            raise UpstreamError(
                f"blob {self.digest}: resume at byte {offset} answered with an unexpected Content-Range",
                url=self.url,
                status=response.status_code,
                transient=True,
            )
        return response, 0

    def _finish(self) -> None:
        if self.size is not None and self.bytes_read != self.size:
            raise BodyInterrupted(
                f"blob {self.digest} ended after {self.bytes_read} of {self.size} bytes", url=self.url
            )
        actual = f"{self.digest.split(':', 1)[0]}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise DigestMismatch(expected=self.digest, actual=actual, url=self.url)

    def __repr__(self) -> str:
        return f"BlobStream(digest={self.digest!r}, size={self.size!r}, bytes_read={self.bytes_read})"

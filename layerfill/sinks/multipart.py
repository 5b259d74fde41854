"""Upload a stream of known size to S3 part by part, each part's bytes held under a ByteBudget.

minio's `put_object` keeps the previous part referenced while it reads the next one, so each transfer holds
up to two parts, and it cannot be told to wait for memory. This loop borrows a part's buffer from the budget,
reads the part into it, uploads it and only then gives it back: the bytes held in part buffers across all
transfers never exceed the budget (a lone part larger than the budget excepted, see ByteBudget).

The object is made visible only by the last request: the single PutObject of a blob up to `part_size`, sent
after its last byte was read, or CompleteMultipartUpload, sent after the last part was read. A reader that
raises (a VerifyingReader on wrong content) therefore leaves no object at the key; the open multipart upload
is aborted. minio (pinned) has no public per-part API; these are its internal calls for the plain S3 requests
CreateMultipartUpload, UploadPart, CompleteMultipartUpload, AbortMultipartUpload and PutObject.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

from minio import Minio
from minio.datatypes import Part

from layerfill.sinks.base import SinkIntegrityError
from layerfill.sinks.budget import ByteBudget
from layerfill.sinks.s3client import PAYLOAD_HASH, UNSIGNED_PAYLOAD

log = logging.getLogger(__name__)


class Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview) -> int: ...


def part_lengths(size: int, part_size: int) -> Iterator[int]:
    """The length of each part of a `size`-byte object cut into `part_size` parts (the last one shorter)."""
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, got {part_size}")
    whole, rest = divmod(size, part_size)
    yield from (part_size for _ in range(whole))
    if rest:
        yield rest


def upload(
    client: Minio,
    bucket: str,
    key: str,
    reader: Readable,
    size: int,
    *,
    part_size: int,
    budget: ByteBudget,
    content_type: str,
    sha256: str | None = None,
    unsigned_parts: bool = False,
) -> None:
    """Store exactly `size` bytes of `reader` at `key`; errors from the reader or S3 propagate unchanged.

    `sha256` (hex), the object's hash when known, signs a single PUT in place of hashing the body (the server
    refuses a body that does not match it); `unsigned_parts` sends multipart parts as UNSIGNED-PAYLOAD. Both need
    the client to honour a named payload hash (layerfill.sinks.s3client.CacheMinio)."""
    headers = {"Content-Type": content_type}
    if size <= part_size:
        if not size:
            client._put_object(bucket, key, b"", headers)
            return
        with budget.buffer(size) as buffer:
            body = _read_part(reader, buffer, key)
            client._put_object(bucket, key, body, {**headers, PAYLOAD_HASH: sha256} if sha256 else headers)
        return
    part_headers = {PAYLOAD_HASH: UNSIGNED_PAYLOAD} if unsigned_parts else None
    upload_id = client._create_multipart_upload(bucket, key, dict(headers))
    try:
        parts: list[Part] = []
        for number, length in enumerate(part_lengths(size, part_size), start=1):
            with budget.buffer(length) as buffer:
                body = _read_part(reader, buffer, key)
                # A copy per part: minio adds the request's own headers (date, signature) to the dict it is given.
                etag = client._upload_part(bucket, key, body, part_headers and dict(part_headers), upload_id, number)
            parts.append(Part(number, etag))
        client._complete_multipart_upload(bucket, key, upload_id, parts)
    except BaseException:
        # Best effort: an upload left open is invisible and is aborted by the next store of this key.
        with contextlib.suppress(Exception):
            client._abort_multipart_upload(bucket, key, upload_id)
        raise


def _read_part(reader: Readable, buffer: bytearray, key: str) -> bytearray:
    """`buffer` filled straight from the reader: the part is never held twice (chunks plus their join)."""
    n = len(buffer)
    with memoryview(buffer) as view:
        have = 0
        while have < n:
            got = reader.readinto(view[have:])
            if not got:
                raise SinkIntegrityError(f"upload to {key}: the stream ended {n - have} bytes short of a part")
            have += got
    return buffer

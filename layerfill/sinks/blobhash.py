"""`verify --deep`: re-hash blob data as the cache's storage holds it, streaming, so a corrupted object is found."""

from __future__ import annotations

import hashlib
from contextlib import closing

from minio.error import S3Error

from layerfill.config.settings import S3Settings
from layerfill.oci.reference import Digest
from layerfill.sinks.layout import blob_data_key
from layerfill.sinks.s3client import is_not_found, make_minio

CHUNK = 1024 * 1024


class StoredBlobHasher:
    def __init__(self, s3: S3Settings) -> None:
        self.bucket = s3.bucket
        self.root = s3.root_directory
        self._client = make_minio(s3)

    def __call__(self, digest: str) -> str | None:
        """The digest the stored data hashes to (same algorithm as `digest`), or None when there is no data."""
        d = Digest.parse(digest)
        h = hashlib.new(d.algorithm)
        try:
            response = self._client.get_object(self.bucket, blob_data_key(self.root, d))
        except S3Error as exc:
            if is_not_found(exc):
                return None
            raise
        with closing(response):
            for chunk in response.stream(CHUNK, decode_content=False):
                h.update(chunk)
            response.release_conn()
        return f"{d.algorithm}:{h.hexdigest()}"

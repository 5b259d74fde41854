"""What the proxy cache's S3 storage holds (CNCF distribution's layout), read back independently of the sink."""

from __future__ import annotations

import hashlib
from contextlib import closing

from minio import Minio
from minio.error import S3Error

from layerfill.config.settings import S3Settings
from layerfill.sinks.layout import blob_data_key, layer_link_key, manifest_revision_link_key, repository_prefix
from layerfill.sinks.s3client import is_not_found, make_minio


class CacheStorage:
    def __init__(self, s3: S3Settings) -> None:
        self.bucket = s3.bucket
        self.root = s3.root_directory
        self.client: Minio = make_minio(s3)

    def data_key(self, digest: str) -> str:
        return blob_data_key(self.root, digest)

    def size(self, digest: str) -> int | None:
        """Size of the blob's data object at its final key, None when there is none."""
        try:
            return int(self.client.stat_object(self.bucket, self.data_key(digest)).size or 0)
        except S3Error as exc:
            if is_not_found(exc):
                return None
            raise

    def rehash(self, digest: str) -> tuple[str, int]:
        """(sha256 digest, size) of the data object at the blob's final key, streamed."""
        h = hashlib.sha256()
        size = 0
        with closing(self.client.get_object(self.bucket, self.data_key(digest))) as resp:
            for chunk in resp.stream(1 << 20, decode_content=False):
                h.update(chunk)
                size += len(chunk)
            resp.release_conn()
        return f"sha256:{h.hexdigest()}", size

    def forget(self, digest: str) -> None:
        """Remove the blob's data object, so the next fill must really download it."""
        self.client.remove_object(self.bucket, self.data_key(digest))

    # minio has no public API for in-progress multipart uploads; its internal calls are the plain S3 ones.
    def uploads_in_progress(self, digest: str) -> list[str]:
        """Upload ids of multipart uploads started but neither completed nor aborted at the blob's final key."""
        key = self.data_key(digest)
        result = self.client._list_multipart_uploads(self.bucket, prefix=key)
        return [u.upload_id for u in result.uploads if u.object_name == key and u.upload_id]

    def abort_uploads(self, digest: str) -> None:
        """Drop uploads a killed writer left behind (their parts take space, they are never visible)."""
        for upload_id in self.uploads_in_progress(digest):
            self.client._abort_multipart_upload(self.bucket, self.data_key(digest), upload_id)

    def _read_small(self, key: str) -> str | None:
        try:
            with closing(self.client.get_object(self.bucket, key)) as resp:
                data = resp.read(decode_content=False)
                resp.release_conn()
                return data.decode()
        except S3Error as exc:
            if is_not_found(exc):
                return None
            raise

    def layer_link(self, repository: str, digest: str) -> str | None:
        return self._read_small(layer_link_key(self.root, repository, digest))

    def manifest_link(self, repository: str, digest: str) -> str | None:
        return self._read_small(manifest_revision_link_key(self.root, repository, digest))

    def linked_digests(self, repository: str) -> dict[str, str]:
        """Every `_layers` and `_manifests/revisions` link of `repository`, listed from the bucket: key -> digest."""
        base = repository_prefix(self.root, repository)
        out = {}
        for key in self.keys_under(base):
            if key.endswith("/link") and (key.startswith(f"{base}_layers/") or "/_manifests/revisions/" in key):
                out[key] = self._read_small(key) or ""
        return out

    def keys_under(self, prefix: str) -> list[str]:
        return [
            o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True) if o.object_name
        ]

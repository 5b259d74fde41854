"""Writes CNCF distribution's own storage layout in S3, so the proxy cache serves what we store.

How wrong content is kept invisible: blobs stream through a VerifyingReader into `multipart.upload` with
the known size. A blob up to `part_size` is sent as one PutObject only after its last byte was read and
verified; a larger one goes up as a multipart upload, and S3 makes a multipart object visible only at
CompleteMultipartUpload, which is sent only after reading (and so verifying) the last part. When the reader
raises, the upload is aborted, so neither a wrong nor a partial object ever exists at the final key. A staging
key plus server-side copy would write every byte twice and need a multipart copy above 5 GiB, for no extra
safety.
Parts go up one at a time per blob (layerfill/sinks/multipart.py), each read only once its bytes are reserved
in a ByteBudget shared by every upload of the process (`fetcher.buffer_bytes`): part buffers never hold more
than the budget, whatever the number of concurrent transfers (the fetcher's workers) or their sizes.
Concurrent writers of the same blob each complete an identical object; S3 keeps one, whole.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterable
from contextlib import closing
from datetime import timedelta

from minio import Minio
from minio.error import S3Error

from layerfill.config.settings import S3Settings
from layerfill.oci.digest import digest_of
from layerfill.oci.manifest import MAX_MANIFEST_BYTES
from layerfill.oci.reference import Digest, InvalidReference, validate_repository, validate_tag
from layerfill.sinks.base import (
    BlobLocation,
    BlobNotFound,
    BlobSource,
    BlobSpec,
    BlobTooLarge,
    Presence,
    Sink,
    SinkIntegrityError,
    StoreResult,
)
from layerfill.sinks.budget import ByteBudget
from layerfill.sinks.layout import (
    REPOSITORY_MARKERS,
    blob_data_key,
    layer_link_key,
    link_content,
    manifest_revision_link_key,
    parse_link,
    repositories_prefix,
    repository_prefix,
    storage_prefix,
    tag_index_link_key,
    tag_link_key,
    tags_prefix,
)
from layerfill.sinks.malloc import pin_mmap_threshold
from layerfill.sinks.multipart import upload
from layerfill.sinks.s3client import is_not_found, make_http_pool, make_minio, s3_errors
from layerfill.sinks.verified_stream import SourceFailed, VerifyingReader

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB
DEFAULT_BUFFER_BYTES = 64 * MiB  # fetcher.buffer_bytes
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
_MAX_LINK_BYTES = 1024
_OCTET_STREAM = "application/octet-stream"  # what distribution itself stores blobs as


def part_size_for(size: int, part_size: int) -> int:
    """`part_size`, grown in whole MiB when `size` would need more than S3's 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    if needed <= part_size:
        return part_size
    return min(-(-needed // MiB) * MiB, MAX_PART_SIZE)


class DistributionSink(Sink):
    name = "distribution"
    stores_tags = True

    def __init__(
        self,
        s3: S3Settings,
        part_size: int = DEFAULT_PART_SIZE,
        *,
        max_connections: int = 16,
        client: Minio | None = None,
        presign_endpoint: str | None = None,
        presign_expiry_s: int = 3600,
        budget: ByteBudget | None = None,
    ) -> None:
        if not isinstance(part_size, int) or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be an integer from {MIN_PART_SIZE} to {MAX_PART_SIZE}, got {part_size!r}")
        if not s3.bucket:
            raise ValueError("s3.bucket must not be empty")
        storage_prefix(s3.root_directory)  # fail on a bad root now, not on the first write
        self.bucket = s3.bucket
        self.root = s3.root_directory
        self.part_size = part_size
        self.sign_parts = s3.sign_parts
        self.budget = budget or ByteBudget(DEFAULT_BUFFER_BYTES)
        pin_mmap_threshold()  # freed part buffers go back to the OS, so RSS follows the budget
        self._http = make_http_pool(max_connections=max_connections) if client is None else None
        self._client = client or make_minio(s3, self._http)
        # Blob URLs for readers outside layerfill: signed for the endpoint they reach, which may differ from ours.
        self._presign_s3 = s3.model_copy(update={"endpoint": presign_endpoint}) if presign_endpoint else s3
        self._presign_expiry = timedelta(seconds=presign_expiry_s)
        self._presigner: Minio | None = None
        self._presign_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DistributionSink(bucket={self.bucket!r}, root={self.root!r})"

    # -- the Sink interface ------------------------------------------------------------------------

    def blob_presence(self, repository: str, digest: str) -> Presence:
        d = Digest.parse(digest)
        return self._presence(blob_data_key(self.root, d), layer_link_key(self.root, repository, d), d)

    def manifest_presence(self, repository: str, digest: str) -> Presence:
        d = Digest.parse(digest)
        return self._presence(blob_data_key(self.root, d), manifest_revision_link_key(self.root, repository, d), d)

    def store_blob(self, repository: str, blob: BlobSpec, source: BlobSource) -> StoreResult:
        d = Digest.parse(blob.digest, "blob.digest")
        data_key = blob_data_key(self.root, d)
        link_key = layer_link_key(self.root, repository, d)
        existing = self._stat_size(data_key)
        if existing == blob.size:
            return self._link(link_key, d)
        if existing is not None:
            log.warning(
                "stored data for %s has %d bytes but %d are expected: fetching it again", d, existing, blob.size
            )
        stale = self._open_uploads(data_key) if blob.size > MIN_PART_SIZE else set()
        with source() as chunks:
            self._upload_verified(data_key, chunks, str(d), blob.size)
        self._abort_uploads(data_key, stale)
        self._write_link(link_key, d)  # only now: a link must never point at data that is not there
        return StoreResult("fetched", blob.size)

    def store_manifest(self, repository: str, digest: str, media_type: str, data: bytes) -> StoreResult:
        d = Digest.parse(digest)
        validate_repository(repository)
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"manifest data must be bytes, got {type(data).__name__}")
        actual = digest_of(bytes(data), d.algorithm)
        if actual != str(d):
            raise SinkIntegrityError(f"manifest {d} ({media_type}): content hashes to {actual}")
        data_key = blob_data_key(self.root, d)
        link_key = manifest_revision_link_key(self.root, repository, d)
        if self._stat_size(data_key) == len(data):
            return self._link(link_key, d)
        self._put_small(data_key, bytes(data))
        self._write_link(link_key, d)
        return StoreResult("fetched", len(data))

    def store_tag(self, repository: str, tag: str, digest: str) -> StoreResult:
        """Write the tag as distribution does: its index entry for `digest`, then `current/link`. The manifest
        must be stored first (store_manifest): a tag must never name a manifest the cache cannot serve."""
        d = Digest.parse(digest)
        validate_repository(repository)
        current = tag_link_key(self.root, repository, validate_tag(tag))
        if self.manifest_presence(repository, str(d)) is not Presence.LINKED:
            raise SinkIntegrityError(f"tag {tag} of {repository}: manifest {d} is not stored in the repository")
        if self._read_link(current) == str(d):
            return StoreResult("present", 0)
        self._write_link(tag_index_link_key(self.root, repository, tag, d), d)
        self._write_link(current, d)
        return StoreResult("linked", 0)

    def read_manifest(self, repository: str, digest: str) -> bytes | None:
        """The bytes the proxy stored (content-addressed, so any repository's copy is this manifest)."""
        validate_repository(repository)
        try:
            return self.read_blob_bytes(digest)
        except (BlobNotFound, BlobTooLarge):
            return None
        except SinkIntegrityError as exc:  # a damaged copy: the caller asks the upstream instead
            log.warning("manifest %s in storage is damaged, not used: %s", digest, exc)
            return None

    def uploads_in_progress(self, repository: str) -> dict[str, float]:
        """distribution writes `_uploads/<id>/startedat` when an upload begins and removes the directory when it is
        committed or cancelled: the proxy stores every blob it serves for the first time through one."""
        prefix = f"{repository_prefix(self.root, repository)}_uploads/"
        found: dict[str, float] = {}
        with s3_errors("list", prefix):
            for item in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
                name = (item.object_name or "")[len(prefix) :]
                upload_id, _, rest = name.partition("/")
                if not upload_id:
                    continue
                when = item.last_modified.timestamp() if item.last_modified else 0.0
                if rest == "startedat":
                    found[upload_id] = when
                else:
                    found.setdefault(upload_id, when)
        return found

    def blob_location(self, repository: str, digest: str) -> BlobLocation:
        """A presigned GET URL of the blob's data object (computed locally: no request to S3); it needs no
        credentials and expires after `presign_expiry_s`. Every repository shares the data, so `repository` is
        only checked."""
        validate_repository(repository)
        d = Digest.parse(digest, "layer digest")
        with self._presign_lock:
            if self._presigner is None:
                self._presigner = make_minio(self._presign_s3)
            presigner = self._presigner
        key = blob_data_key(self.root, d)
        return BlobLocation(presigner.presigned_get_object(self.bucket, key, expires=self._presign_expiry))

    def close(self) -> None:
        if self._http is not None:
            self._http.clear()

    # -- read helpers ------------------------------------------------------------------------------

    def blob_size(self, digest: str) -> int | None:
        """Size of the stored blob data, or None when there is none."""
        return self._stat_size(blob_data_key(self.root, Digest.parse(digest)))

    def read_blob_bytes(self, digest: str, max_bytes: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob (a manifest, a config) read whole and verified against its digest.

        Raises BlobNotFound, BlobTooLarge (past `max_bytes`) or SinkIntegrityError."""
        d = Digest.parse(digest)
        key = blob_data_key(self.root, d)
        size = self._stat_size(key)
        if size is None:
            raise BlobNotFound(str(d))
        if size > max_bytes:
            raise BlobTooLarge(str(d), size, max_bytes)
        data = self._get_small(key, max_bytes)
        if data is None:
            raise BlobNotFound(str(d))
        if len(data) > max_bytes:
            raise BlobTooLarge(str(d), len(data), max_bytes)
        actual = digest_of(data, d.algorithm)
        if actual != str(d):
            raise SinkIntegrityError(f"stored blob {d} hashes to {actual}")
        return data

    def list_repositories(self) -> list[str]:
        """Every repository name in storage (a directory holding `_layers`, `_manifests` or `_uploads`)."""
        base = repositories_prefix(self.root)
        found: list[str] = []
        pending = [""]
        while pending:
            relative = pending.pop()
            children = self._list_dirs(base + relative)
            name = relative.rstrip("/")
            if name and REPOSITORY_MARKERS.intersection(children) and _is_repository(name):
                found.append(name)
            pending.extend(f"{relative}{child}/" for child in children if not child.startswith("_"))
        return sorted(found)

    def list_manifest_revisions(self, repository: str) -> list[str]:
        """Digests of the manifests linked into `repository`, sorted."""
        base = f"{repository_prefix(self.root, repository)}_manifests/revisions/"
        digests = []
        for algorithm in self._list_dirs(base):
            for hex_part in self._list_dirs(f"{base}{algorithm}/"):
                candidate = f"{algorithm}:{hex_part}"
                try:
                    digests.append(str(Digest.parse(candidate)))
                except InvalidReference:
                    log.warning("ignoring %s in the revisions of %s: not a digest", candidate, repository)
        return sorted(digests)

    def list_tags(self, repository: str) -> dict[str, str]:
        """Tag -> manifest digest, from each tag's `current/link`; tags without a readable link are left out."""
        tags: dict[str, str] = {}
        for tag in self._list_dirs(tags_prefix(self.root, repository)):
            try:
                key = tag_link_key(self.root, repository, validate_tag(tag))
            except InvalidReference:
                log.warning("ignoring tag directory %r of %s: not a valid tag", tag, repository)
                continue
            target = self._read_link(key)
            if target is not None:
                tags[tag] = target
        return tags

    # -- storage primitives ------------------------------------------------------------------------

    def _presence(self, data_key: str, link_key: str, d: Digest) -> Presence:
        if self._stat_size(data_key) is None:
            return Presence.ABSENT
        return Presence.LINKED if self._read_link(link_key) == str(d) else Presence.DATA_ONLY

    def _link(self, link_key: str, d: Digest) -> StoreResult:
        """The data is there: write the link unless it already points at `d`."""
        if self._read_link(link_key) == str(d):
            return StoreResult("present", 0)
        self._write_link(link_key, d)
        return StoreResult("linked", 0)

    def _upload_verified(self, key: str, chunks: Iterable[bytes], digest: str, size: int) -> None:
        reader = VerifyingReader(chunks, digest, size)
        try:
            if size == 0:
                reader.finish()  # a zero-length stream is never read: verify it here
            with s3_errors("upload", key):
                upload(self._client, self.bucket, key, reader, size, part_size=part_size_for(size, self.part_size),
                       budget=self.budget, content_type=_OCTET_STREAM, sha256=_sha256_hex(digest),
                       unsigned_parts=not self.sign_parts)  # fmt: skip
        except SourceFailed as failed:
            raise failed.original from None

    # Multipart uploads a writer could not abort (S3 down when its upload failed, the process killed) stay open,
    # invisible but holding their parts, until aborted. Those open at a key before we upload it are aborted
    # once our object is complete: the data is there, so any of them can only be stale or redundant (a live
    # concurrent writer whose upload is aborted fails once, transiently, and then finds the data present).
    # Only keys large enough for multipart (above S3's 5 MiB minimum part) can have any. minio has no public
    # API for this; its internal calls are the plain S3 ListMultipartUploads and AbortMultipartUpload.
    def _open_uploads(self, key: str) -> set[str]:
        try:
            result = self._client._list_multipart_uploads(self.bucket, prefix=key)
        except Exception as exc:  # housekeeping only: never fail a store for it
            log.warning("could not list open uploads at %s: %s", key, exc)
            return set()
        return {u.upload_id for u in result.uploads if u.object_name == key and u.upload_id}

    def _abort_uploads(self, key: str, upload_ids: set[str]) -> None:
        for upload_id in sorted(upload_ids):
            try:
                self._client._abort_multipart_upload(self.bucket, key, upload_id)
                log.info("aborted a stale multipart upload at %s (%s)", key, upload_id)
            except Exception as exc:
                log.warning("could not abort the stale multipart upload %s at %s: %s", upload_id, key, exc)

    def _write_link(self, key: str, d: Digest) -> None:
        self._put_small(key, link_content(d))

    def _put_small(self, key: str, data: bytes) -> None:
        with s3_errors("put", key):
            self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=_OCTET_STREAM)

    def _stat_size(self, key: str) -> int | None:
        with s3_errors("stat", key):
            try:
                return int(self._client.stat_object(self.bucket, key).size or 0)
            except S3Error as exc:
                if is_not_found(exc):
                    return None
                raise

    def _get_small(self, key: str, limit: int) -> bytes | None:
        """Up to `limit` + 1 bytes of an object (one more, so a caller sees it is too large); None if absent."""
        with s3_errors("get", key):
            try:
                response = self._client.get_object(self.bucket, key)
            except S3Error as exc:
                if is_not_found(exc):
                    return None
                raise
            with closing(response):
                data = response.read(limit + 1, decode_content=False)
                response.release_conn()
                return data

    def _read_link(self, key: str) -> str | None:
        content = self._get_small(key, _MAX_LINK_BYTES)
        if content is None:
            return None
        try:
            return parse_link(content)
        except InvalidReference:
            log.warning("link %s holds %r, not a digest: it will be rewritten", key, content[:80])
            return None

    def _list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-"directories" of `prefix`."""
        with s3_errors("list", prefix):
            return [
                item.object_name[len(prefix) :].rstrip("/")
                for item in self._client.list_objects(self.bucket, prefix=prefix, recursive=False)
                if item.is_dir and item.object_name
            ]


def _is_repository(name: str) -> bool:
    try:
        validate_repository(name)
    except InvalidReference:
        return False
    return True


def _sha256_hex(digest: str) -> str | None:
    """The hex SHA-256 an S3 PUT of the whole blob is signed with, when the blob is addressed by one."""
    d = Digest.parse(digest)
    return d.hex if d.algorithm == "sha256" else None

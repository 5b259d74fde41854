"""DistributionSink aborts the multipart uploads left open at a blob's key (by a writer cut off by an S3 outage or
killed) once it has stored the blob there itself; uploads begun after its own start are left alone."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from minio.error import S3Error

from layerfill.config.settings import S3Settings
from layerfill.sinks.base import BlobSpec
from layerfill.sinks.distribution import DistributionSink
from layerfill.sinks.layout import blob_data_key

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


@dataclass
class FakeUpload:
    object_name: str
    upload_id: str


class FakeMinio:
    """Objects in a dict and a list of open uploads: just what the sink's store path calls."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.uploads: list[FakeUpload] = []
        self.aborted: list[str] = []
        self.fail_list = False
        self.on_put: Any = None  # called once the blob's upload began (another writer starting meanwhile)
        self.parts: dict[str, list[bytes]] = {}

    def stat_object(self, bucket: str, key: str) -> Any:
        if key not in self.objects:
            raise S3Error(None, "NoSuchKey", "missing", key, "r", "h")  # type: ignore[arg-type]
        return SimpleNamespace(size=len(self.objects[key]))

    def get_object(self, bucket: str, key: str) -> Any:
        if key not in self.objects:
            raise S3Error(None, "NoSuchKey", "missing", key, "r", "h")  # type: ignore[arg-type]
        data = self.objects[key]
        return SimpleNamespace(read=lambda n, decode_content=False: data[:n], release_conn=lambda: None,
                               close=lambda: None)  # fmt: skip

    def put_object(self, bucket: str, key: str, data: Any, length: int, **_: Any) -> None:
        body = b""
        while chunk := data.read(1 << 20):
            body += chunk
        self.objects[key] = body

    # The per-part S3 calls multipart.upload makes (blob data); put_object above writes the links.
    def _put_object(self, bucket: str, key: str, data: bytes, headers: dict) -> None:
        self._started()
        self.objects[key] = bytes(data)

    def _create_multipart_upload(self, bucket: str, key: str, headers: dict) -> str:
        self._started()
        self.parts[key] = []
        return f"ours-{key}"

    def _upload_part(self, bucket: str, key: str, data: bytes, headers: Any, upload_id: str, number: int) -> str:
        self.parts[key].append(bytes(data))
        return f"etag{number}"

    def _complete_multipart_upload(self, bucket: str, key: str, upload_id: str, parts: list) -> None:
        self.objects[key] = b"".join(self.parts.pop(key))

    def _started(self) -> None:
        if self.on_put is not None:
            self.on_put()
            self.on_put = None

    def _list_multipart_uploads(self, bucket: str, prefix: str) -> Any:
        if self.fail_list:
            raise OSError("S3 unreachable")
        return SimpleNamespace(uploads=[u for u in self.uploads if u.object_name.startswith(prefix)])

    def _abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.aborted.append(upload_id)
        self.uploads = [u for u in self.uploads if u.upload_id != upload_id]


def _source(data: bytes) -> Any:
    @contextmanager
    def open_() -> Iterator[Iterable[bytes]]:
        yield iter([data[i : i + MiB] for i in range(0, len(data), MiB)])

    return open_


def _blob(size: int) -> tuple[BlobSpec, bytes]:
    data = bytes(size)
    return BlobSpec(f"sha256:{hashlib.sha256(data).hexdigest()}", size), data


S3 = S3Settings(bucket="b", root_directory="/")


def test_uploads_left_open_at_the_key_are_aborted_after_a_successful_store() -> None:
    fake = FakeMinio()
    sink = DistributionSink(S3, 5 * MiB, client=fake)  # type: ignore[arg-type]
    blob, data = _blob(6 * MiB)
    key = blob_data_key("/", blob.digest)
    fake.uploads = [FakeUpload(key, "stale-1"), FakeUpload(key + "x", "other-key")]
    # A writer starting during our upload is not stale: it must be left alone.
    fake.on_put = lambda: fake.uploads.append(FakeUpload(key, "started-after-us"))

    assert sink.store_blob("repo", blob, _source(data)).outcome == "fetched"
    assert fake.objects[key] == data
    assert fake.aborted == ["stale-1"]
    assert [u.upload_id for u in fake.uploads] == ["other-key", "started-after-us"]


def test_small_blobs_and_listing_failures_never_fail_a_store() -> None:
    fake = FakeMinio()
    sink = DistributionSink(S3, 5 * MiB, client=fake)  # type: ignore[arg-type]
    small, small_data = _blob(1000)  # one PutObject: no upload can be open at its key, nothing is listed
    fake.fail_list = True
    assert sink.store_blob("repo", small, _source(small_data)).outcome == "fetched"
    big, big_data = _blob(6 * MiB)
    assert sink.store_blob("repo", big, _source(big_data)).outcome == "fetched"
    assert fake.aborted == []
    assert io.BytesIO(fake.objects[blob_data_key("/", big.digest)]).read() == big_data

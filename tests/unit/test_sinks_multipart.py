"""multipart.upload against a fake S3 client (the network boundary): parts, budget, abort on errors."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from layerfill.sinks.base import SinkIntegrityError
from layerfill.sinks.budget import ByteBudget
from layerfill.sinks.multipart import part_lengths, upload

pytestmark = pytest.mark.unit


class FakeS3:
    """Records the S3 requests minio would send; tracks the part bytes in flight across threads."""

    def __init__(self, *, fail_part: int | None = None, fail_abort: bool = False, delay: float = 0.0) -> None:
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.aborted: list[str] = []
        self.fail_part = fail_part
        self.fail_abort = fail_abort
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._n = 0

    def _put_object(self, bucket: str, key: str, data: bytes, headers: dict) -> None:
        assert headers["Content-Type"] == "application/octet-stream"
        self.objects[key] = bytes(data)

    def _create_multipart_upload(self, bucket: str, key: str, headers: dict) -> str:
        with self._lock:
            self._n += 1
            upload_id = f"u{self._n}"
        self.uploads[upload_id] = {}
        return upload_id

    def _upload_part(self, bucket: str, key: str, data: bytes, headers: None, upload_id: str, number: int) -> str:
        with self._lock:
            self.in_flight += len(data)
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if number == self.fail_part:
                raise OSError("connection reset")
            self.uploads[upload_id][number] = bytes(data)
            return f"etag{number}"
        finally:
            with self._lock:
                self.in_flight -= len(data)

    def _complete_multipart_upload(self, bucket: str, key: str, upload_id: str, parts: list) -> None:
        got = self.uploads.pop(upload_id)
        assert [p.part_number for p in parts] == sorted(got)
        assert [p.etag for p in parts] == [f"etag{n}" for n in sorted(got)]
        self.objects[key] = b"".join(got[n] for n in sorted(got))

    def _abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        if self.fail_abort:
            raise OSError("S3 down")
        self.aborted.append(upload_id)
        self.uploads.pop(upload_id, None)


class Dribble:
    """A reader that hands out at most `step` bytes per read, and can fail after `fail_after` bytes."""

    def __init__(self, data: bytes, step: int = 7, fail_after: int | None = None) -> None:
        self._f = io.BytesIO(data)
        self._step = step
        self._fail_after = fail_after

    def readinto(self, buffer: memoryview) -> int:
        if self._fail_after is not None and self._f.tell() >= self._fail_after:
            raise ValueError("upstream broke")
        return self._f.readinto(buffer[: self._step])


def _upload(s3: FakeS3, key: str, reader, size: int, budget: ByteBudget, part: int = 10) -> None:  # type: ignore[no-untyped-def]
    upload(s3, "b", key, reader, size, part_size=part, budget=budget,  # type: ignore[arg-type]
           content_type="application/octet-stream")  # fmt: skip


@pytest.mark.parametrize(
    ("size", "part", "expected"),
    [(0, 5, []), (5, 5, [5]), (12, 5, [5, 5, 2]), (15, 5, [5, 5, 5]), (4, 5, [4])],
)
def test_part_lengths(size: int, part: int, expected: list[int]) -> None:
    assert list(part_lengths(size, part)) == expected


def test_small_blob_is_one_put_without_multipart() -> None:
    s3, budget = FakeS3(), ByteBudget(100)
    _upload(s3, "k", Dribble(b"x" * 10), 10, budget)
    assert s3.objects == {"k": b"x" * 10}
    assert s3.uploads == {}
    assert budget.held == 0 and budget.peak == 10


def test_large_blob_goes_up_in_parts_with_its_bytes_intact() -> None:
    data = bytes(range(256)) * 3 + b"tail"
    s3, budget = FakeS3(), ByteBudget(100)
    _upload(s3, "k", Dribble(data), len(data), budget, part=64)
    assert s3.objects["k"] == data
    assert budget.held == 0
    assert budget.peak == 64  # one part at a time per transfer, not two


def test_a_short_stream_fails_and_aborts() -> None:
    s3, budget = FakeS3(), ByteBudget(100)
    with pytest.raises(SinkIntegrityError, match="short"):
        _upload(s3, "k", Dribble(b"x" * 25), 30, budget)
    assert "k" not in s3.objects
    assert s3.aborted == ["u1"]
    assert budget.held == 0


def test_a_reader_error_aborts_releases_and_propagates_unchanged() -> None:
    s3, budget = FakeS3(), ByteBudget(100)
    with pytest.raises(ValueError, match="upstream broke"):
        _upload(s3, "k", Dribble(b"x" * 50, fail_after=23), 50, budget)
    assert "k" not in s3.objects
    assert s3.aborted == ["u1"]
    assert budget.held == 0


def test_an_s3_error_aborts_and_releases() -> None:
    s3, budget = FakeS3(fail_part=2), ByteBudget(100)
    with pytest.raises(OSError, match="connection reset"):
        _upload(s3, "k", Dribble(b"x" * 50), 50, budget)
    assert s3.aborted == ["u1"] and "k" not in s3.objects
    assert budget.held == 0


def test_a_failed_abort_does_not_hide_the_original_error() -> None:
    s3, budget = FakeS3(fail_part=1, fail_abort=True), ByteBudget(100)
    with pytest.raises(OSError, match="connection reset"):
        _upload(s3, "k", Dribble(b"x" * 50), 50, budget)
    assert budget.held == 0


def test_many_transfers_hold_no_more_than_the_budget() -> None:
    s3, budget = FakeS3(delay=0.002), ByteBudget(30)  # room for 3 parts of 10 across 8 transfers
    blobs = {f"k{i}": bytes([i]) * 95 for i in range(8)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: _upload(s3, kv[0], Dribble(kv[1], step=10), 95, budget), blobs.items()))
    assert s3.objects == blobs
    assert s3.max_in_flight <= 30
    assert budget.peak == 30  # the budget, not the transfer count, was the limit
    assert budget.held == 0


def test_a_part_bigger_than_the_budget_still_uploads() -> None:
    s3, budget = FakeS3(), ByteBudget(8)
    _upload(s3, "k", Dribble(b"y" * 25), 25, budget, part=10)
    assert s3.objects["k"] == b"y" * 25
    assert budget.held == 0

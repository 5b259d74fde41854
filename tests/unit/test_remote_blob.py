import gzip

import pytest

from layerfill.remote import BodyInterrupted, DigestMismatch, NotFound, RegistryClient, UpstreamError
from tests.unit.registry_fake import FakeRegistry, Fault, digest_of, fast_retry

pytestmark = pytest.mark.unit

DATA = bytes(range(256)) * 10_000  # 2.56 MB: three 1 MiB chunks


def client(registry: FakeRegistry, **kwargs: object) -> RegistryClient:
    kwargs.setdefault("retry", fast_retry())
    return RegistryClient(registry.url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> FakeRegistry:
    with FakeRegistry() as reg:
        yield reg


def blob_path(digest: str) -> str:
    return f"/v2/team/app/blobs/{digest}"


def test_streams_in_chunks_of_at_most_1_mib(registry: FakeRegistry) -> None:
    digest = registry.add_blob("team/app", DATA)
    with client(registry).open_blob("team/app", digest) as blob:
        assert blob.size == len(DATA)
        chunks = list(blob)
    assert b"".join(chunks) == DATA
    assert max(len(c) for c in chunks) <= 1024 * 1024
    assert len(chunks) >= 3
    assert blob.bytes_read == len(DATA) and blob.resumes == 0


def test_cut_mid_body_resumes_with_range(registry: FakeRegistry) -> None:
    digest = registry.add_blob("team/app", DATA)
    registry.script(blob_path(digest), Fault(truncate_after=1_500_000))
    with client(registry).open_blob("team/app", digest) as blob:
        assert b"".join(blob) == DATA
    assert blob.resumes == 1
    ranges = [s.headers.get("Range") for s in registry.requests_to(blob_path(digest))]
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_resume_when_range_is_ignored_skips_what_was_delivered(registry: FakeRegistry) -> None:
    digest = registry.add_blob("team/app", DATA)
    registry.script(blob_path(digest), Fault(truncate_after=1_500_000), Fault(ignore_range=True))
    with client(registry).open_blob("team/app", digest) as blob:
        assert b"".join(blob) == DATA
    assert blob.resumes == 1


def test_cut_on_blob_storage_resumes_through_the_registry() -> None:
    with FakeRegistry(auth="bearer", storage_host="localhost") as registry:
        digest = registry.add_blob("team/app", DATA)
        registry.script(f"/storage/team/app@{digest}", Fault(truncate_after=100_000))
        with client(registry).open_blob("team/app", digest) as blob:
            assert b"".join(blob) == DATA
        storage = registry.requests_to("/storage/")
        assert len(storage) == 2 and storage[1].headers.get("Range") == "bytes=100000-"
        assert all("Authorization" not in s.headers for s in storage)


def test_content_length_larger_than_body_is_caught_on_resume(registry: FakeRegistry) -> None:
    data = b"short-body" * 100
    digest = registry.add_blob("team/app", data)
    registry.script(blob_path(digest), Fault(content_length=len(data) + 50))
    with client(registry).open_blob("team/app", digest) as blob:
        assert blob.size == len(data) + 50
        with pytest.raises(UpstreamError, match="Content-Range") as info:
            b"".join(blob)
    assert info.value.transient is True


def test_body_short_on_every_attempt_gives_up_as_interrupted(registry: FakeRegistry) -> None:
    data = b"short-body" * 100
    digest = registry.add_blob("team/app", data)
    registry.script(blob_path(digest), *[Fault(content_length=len(data) + 50, ignore_range=True) for _ in range(3)])
    c = client(registry, retry=fast_retry(max_attempts=3))
    with c.open_blob("team/app", digest) as blob, pytest.raises(BodyInterrupted) as info:
        b"".join(blob)
    assert info.value.transient is True
    assert blob.resumes == 2
    assert len(registry.requests_to(blob_path(digest))) == 3


def test_content_length_smaller_than_body_is_a_digest_mismatch(registry: FakeRegistry) -> None:
    data = b"long-body" * 100
    digest = registry.add_blob("team/app", data)
    registry.script(blob_path(digest), Fault(content_length=len(data) - 9))
    with client(registry).open_blob("team/app", digest) as blob, pytest.raises(DigestMismatch):
        b"".join(blob)


def test_corrupt_blob_fails_after_the_last_chunk(registry: FakeRegistry) -> None:
    digest = digest_of(b"what was asked for")
    registry.blobs[("team/app", digest)] = b"something else entirely"
    chunks: list[bytes] = []
    with client(registry).open_blob("team/app", digest) as blob, pytest.raises(DigestMismatch) as info:
        for chunk in blob:
            chunks.append(chunk)
    assert b"".join(chunks) == b"something else entirely"
    assert info.value.expected == digest and info.value.actual == digest_of(b"something else entirely")


def test_missing_blob_raises_not_found_on_open(registry: FakeRegistry) -> None:
    with pytest.raises(NotFound, match="BLOB_UNKNOWN"), client(registry).open_blob("team/app", "sha256:" + "2" * 64):
        pass


def test_compressed_layer_is_passed_through_undecoded(registry: FakeRegistry) -> None:
    layer = gzip.compress(b"tar contents" * 1000)
    digest = registry.add_blob("team/app", layer)
    registry.script(blob_path(digest), Fault(extra_headers={"Content-Encoding": "gzip"}))
    with client(registry).open_blob("team/app", digest) as blob:
        assert b"".join(blob) == layer
    assert registry.requests_to(blob_path(digest))[0].headers["Accept-Encoding"] == "identity"


def test_transient_open_failure_is_retried(registry: FakeRegistry) -> None:
    digest = registry.add_blob("team/app", b"abc" * 10)
    registry.script(blob_path(digest), Fault(status=502), Fault(status=504))
    with client(registry).open_blob("team/app", digest) as blob:
        assert b"".join(blob) == b"abc" * 10


def test_iterating_before_open_is_an_error() -> None:
    from layerfill.remote.blob import BlobStream

    stream = BlobStream(digest="sha256:" + "0" * 64, opener=lambda offset: None, retry=fast_retry())  # type: ignore[arg-type,return-value]
    with pytest.raises(RuntimeError, match="open"):
        next(stream)

import hashlib
from collections.abc import Iterator

import pytest

from layerfill.sinks.base import SinkIntegrityError
from layerfill.sinks.verified_stream import SourceFailed, VerifyingReader

pytestmark = pytest.mark.unit

DATA = bytes(range(256)) * 40  # 10240 bytes
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read_all(reader: VerifyingReader, n: int) -> bytes:
    out = bytearray()
    while True:
        part = reader.read(n)
        if not part:
            return bytes(out)
        assert len(part) <= n
        out += part


@pytest.mark.parametrize(("chunk", "n"), [(1000, 4096), (4096, 1000), (1, 10240), (10240, 10240), (7, 3)])
def test_returns_exactly_the_source_bytes(chunk: int, n: int) -> None:
    reader = VerifyingReader(chunks(DATA, chunk), DIGEST, len(DATA))
    assert read_all(reader, n) == DATA
    assert reader.bytes_received == len(DATA)


def test_reads_fill_the_requested_size_until_the_end() -> None:
    reader = VerifyingReader(chunks(DATA, 1000), DIGEST, len(DATA))
    assert [len(reader.read(4096)) for _ in range(4)] == [4096, 4096, 2048, 0]


def test_read_all_at_once() -> None:
    assert VerifyingReader(chunks(DATA, 999), DIGEST, len(DATA)).read() == DATA


def test_empty_chunks_are_skipped() -> None:
    reader = VerifyingReader(iter([b"", DATA[:10], b"", DATA[10:]]), DIGEST, len(DATA))
    assert reader.read(len(DATA)) == DATA


def test_wrong_content_fails_in_the_read_that_reaches_the_size() -> None:
    bad = DATA[:-1] + b"\x00"
    reader = VerifyingReader(chunks(bad, 1024), DIGEST, len(DATA))
    assert len(reader.read(8192)) == 8192
    # the last 2048 bytes are never handed out: the read that would return them raises
    with pytest.raises(SinkIntegrityError, match="digest mismatch"):
        reader.read(8192)


def test_short_source_fails_at_end_of_stream() -> None:
    reader = VerifyingReader(chunks(DATA[:-5], 1024), DIGEST, len(DATA))
    with pytest.raises(SinkIntegrityError, match="size mismatch"):
        read_all(reader, 4096)


def test_long_source_is_cut_off_without_reading_the_rest() -> None:
    pulled = []

    def source() -> Iterator[bytes]:
        for chunk in chunks(DATA + b"extra" * 1000, 1024):
            pulled.append(len(chunk))
            yield chunk

    reader = VerifyingReader(source(), DIGEST, len(DATA))
    with pytest.raises(SinkIntegrityError, match=r"more than 10240 bytes"):
        read_all(reader, 4096)
    assert sum(pulled) <= len(DATA) + 1024


def test_exact_content_with_trailing_data_is_refused() -> None:
    reader = VerifyingReader(iter([DATA, b"x"]), DIGEST, len(DATA))
    with pytest.raises(SinkIntegrityError):
        reader.read(len(DATA))


def test_source_errors_are_wrapped_with_the_original() -> None:
    boom = ConnectionResetError("upstream went away")

    def source() -> Iterator[bytes]:
        yield DATA[:100]
        raise boom

    reader = VerifyingReader(source(), DIGEST, len(DATA))
    with pytest.raises(SourceFailed) as info:
        reader.read(4096)
    assert info.value.original is boom


def test_finish_verifies_an_empty_blob() -> None:
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    VerifyingReader(iter([]), empty, 0).finish()
    with pytest.raises(SinkIntegrityError):
        VerifyingReader(iter([b"x"]), empty, 0).finish()


def test_sha512_digests_are_verified_with_sha512() -> None:
    digest = "sha512:" + hashlib.sha512(DATA).hexdigest()
    assert read_all(VerifyingReader(chunks(DATA, 100), digest, len(DATA)), 4096) == DATA


def readinto_all(reader: VerifyingReader, n: int) -> bytes:
    out = bytearray()
    while True:
        buffer = bytearray(n)
        got = reader.readinto(buffer)
        if not got:
            return bytes(out)
        out += buffer[:got]


@pytest.mark.parametrize(("chunk", "n"), [(1000, 4096), (4096, 1000), (1, 10240), (10240, 10240), (7, 3)])
def test_readinto_returns_exactly_the_source_bytes(chunk: int, n: int) -> None:
    reader = VerifyingReader(chunks(DATA, chunk), DIGEST, len(DATA))
    assert readinto_all(reader, n) == DATA
    assert reader.bytes_received == len(DATA)


def test_readinto_fills_the_buffer_until_the_end() -> None:
    reader = VerifyingReader(chunks(DATA, 1000), DIGEST, len(DATA))
    buffer = bytearray(4096)
    assert [reader.readinto(memoryview(buffer)) for _ in range(4)] == [4096, 4096, 2048, 0]


def test_readinto_refuses_wrong_content_before_handing_out_the_last_bytes() -> None:
    bad = DATA[:-1] + b"\x00"
    reader = VerifyingReader(chunks(bad, 1024), DIGEST, len(DATA))
    assert reader.readinto(bytearray(8192)) == 8192
    with pytest.raises(SinkIntegrityError, match="digest mismatch"):
        reader.readinto(bytearray(8192))


def test_readinto_refuses_a_short_source() -> None:
    reader = VerifyingReader(chunks(DATA[:-5], 1024), DIGEST, len(DATA))
    with pytest.raises(SinkIntegrityError, match="size mismatch"):
        readinto_all(reader, 4096)


class SelfChecking:
    """A source that checks its own digest when it reaches its end, as the upstream's BlobStream does."""

    verifies_digest = True

    def __init__(self, data: bytes, digest: str, size: int = 1024) -> None:
        self.digest = digest
        self._chunks = chunks(data, size)
        self._hash = hashlib.sha256()

    def __iter__(self) -> "SelfChecking":
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            if "sha256:" + self._hash.hexdigest() != self.digest:
                raise ValueError("the source's own digest check failed") from None
            raise
        self._hash.update(chunk)
        return chunk


def test_a_source_that_checks_the_same_digest_is_not_hashed_again() -> None:
    reader = VerifyingReader(SelfChecking(DATA, DIGEST), DIGEST, len(DATA))
    assert not reader.hashes
    assert readinto_all(reader, 4096) == DATA and reader.bytes_received == len(DATA)


def test_a_self_checking_sources_failure_comes_before_the_last_bytes_are_handed_out() -> None:
    bad = DATA[:-1] + b"\x00"
    reader = VerifyingReader(SelfChecking(bad, DIGEST), DIGEST, len(DATA))
    assert reader.readinto(bytearray(8192)) == 8192
    with pytest.raises(SourceFailed, match="own digest check failed"):
        reader.readinto(bytearray(8192))  # the read that reaches the size pulls the source to its end first


def test_a_self_checking_source_is_still_held_to_the_size() -> None:
    short = VerifyingReader(SelfChecking(DATA[:-5], "sha256:" + hashlib.sha256(DATA[:-5]).hexdigest()),
                            "sha256:" + hashlib.sha256(DATA[:-5]).hexdigest(), len(DATA))  # fmt: skip
    with pytest.raises(SinkIntegrityError, match="size mismatch"):
        readinto_all(short, 4096)
    long_digest = "sha256:" + hashlib.sha256(DATA + b"x").hexdigest()
    long = VerifyingReader(SelfChecking(DATA + b"x", long_digest, 10241), long_digest, len(DATA))
    with pytest.raises(SinkIntegrityError, match="more than 10240 bytes"):
        long.readinto(bytearray(20000))


def test_a_source_that_checks_another_digest_is_hashed_here() -> None:
    other = "sha256:" + hashlib.sha256(b"other").hexdigest()
    reader = VerifyingReader(SelfChecking(DATA, other), DIGEST, len(DATA))
    assert reader.hashes


def test_the_upstreams_blob_stream_says_it_checks_its_digest() -> None:
    from layerfill.remote.blob import BlobStream

    assert BlobStream.verifies_digest is True  # the fill relies on it (test_remote_blob: it raises at its end)

import gzip
import hashlib
import random
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from layerfill.oci import mediatypes as mt
from layerfill.oci.digest import digest_of
from layerfill.testimages.layer import BlobDir, Directory, File, LayerBlob, Symlink, random_layer, write_layer

pytestmark = pytest.mark.unit

FILES = {
    "usr/bin/tool": File(b"#!/bin/sh\n", 0o755),
    "etc/app.conf": b"key=value\n",
    "/var/empty/": Directory(),
    "usr/bin/alias": Symlink("tool"),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def diff_id(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with gzip.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return f"sha256:{h.hexdigest()}", n


def check_blob(blobs: BlobDir, layer: LayerBlob) -> None:
    path = blobs.path(layer.digest)
    assert path == blobs.root / "sha256" / layer.digest.split(":")[1]
    assert path.stat().st_size == layer.size
    assert sha256_file(path) == layer.digest
    assert diff_id(path) == (layer.diff_id, layer.uncompressed_size)


def test_layer_contents_are_deterministic_and_normalized(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path / "blobs")
    layer = write_layer(blobs, FILES)
    assert layer.media_type == mt.OCI_LAYER_GZIP
    check_blob(blobs, layer)
    raw = blobs.path(layer.digest).read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert raw[3] & 0x08 == 0  # no file name in the gzip header

    with tarfile.open(blobs.path(layer.digest)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert names == [
            "etc",
            "etc/app.conf",
            "usr",
            "usr/bin",
            "usr/bin/alias",
            "usr/bin/tool",
            "var",
            "var/empty",
        ]
        by_name = {m.name: m for m in members}
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        assert by_name["usr"].isdir() and by_name["var/empty"].isdir()
        assert by_name["usr/bin/tool"].mode == 0o755
        assert by_name["etc/app.conf"].mode == 0o644
        assert by_name["usr/bin/alias"].issym() and by_name["usr/bin/alias"].linkname == "tool"
        extracted = tar.extractfile("etc/app.conf")
        assert extracted is not None and extracted.read() == b"key=value\n"

    # Same input, another directory, different insertion order: same bytes.
    again = write_layer(BlobDir(tmp_path / "other"), dict(reversed(list(FILES.items()))))
    assert again == layer


def test_different_content_gives_different_digest(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    assert write_layer(blobs, {"a": b"1"}).digest != write_layer(blobs, {"a": b"2"}).digest


def test_empty_layer(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    layer = write_layer(blobs, {})
    check_blob(blobs, layer)
    assert layer.uncompressed_size == 10240  # one tar record of end-of-archive zeros


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../etc/passwd": b"x"}, "'..'"),
        ({"a/../../b": b"x"}, "'..'"),
        ({"./a": b"x"}, "'.'"),
        ({"": b"x"}, "needs a name"),
        ({"/": b"x"}, "needs a name"),
        ({"a//b": b"x"}, "empty"),
        ({"a\\b": b"x"}, "backslash"),
        ({"a\x00b": b"x"}, "NUL"),
        ({"a": b"x", "a/b": b"y"}, "non-directory"),
        ({"a": b"x", "/a": b"y"}, "duplicate"),
    ],
)
def test_bad_paths_are_refused_and_leave_no_temp_files(tmp_path: Path, files: dict, message: str) -> None:
    blobs = BlobDir(tmp_path)
    with pytest.raises(ValueError, match=message):
        write_layer(blobs, files)
    assert list((tmp_path / "sha256").iterdir()) == []


def test_random_layer_content_size_and_determinism(tmp_path: Path) -> None:
    size = 3 * 1024 * 1024 + 17
    blobs = BlobDir(tmp_path / "a")
    layer = random_layer(blobs, size, seed=5)
    check_blob(blobs, layer)
    assert layer.uncompressed_size >= size
    assert layer.uncompressed_size - size < 16 * 1024  # only tar headers and padding on top
    # Incompressible: gzip cannot shrink it.
    assert layer.size > size
    with tarfile.open(blobs.path(layer.digest)) as tar:
        member = tar.getmember("random/data.bin")
        assert member.size == size and member.mtime == 0
        data = tar.extractfile(member)
        assert data is not None
        assert data.read() == random.Random(5).randbytes(size)

    assert random_layer(BlobDir(tmp_path / "b"), size, seed=5) == layer
    assert random_layer(BlobDir(tmp_path / "c"), size, seed=6).digest != layer.digest


def test_random_layer_streams_in_bounded_memory(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    tracemalloc.start()
    try:
        layer = random_layer(BlobDir(tmp_path), size, seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert layer.uncompressed_size > size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes: the layer was not streamed"


def test_random_layer_rejects_negative_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size_bytes"):
        random_layer(BlobDir(tmp_path), -1, seed=1)


def test_blob_dir_write_bytes_and_path_guard(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    digest, size = blobs.write_bytes(b"{}")
    assert (digest, size) == (digest_of(b"{}"), 2)
    assert blobs.path(digest).read_bytes() == b"{}"
    with pytest.raises(ValueError):
        blobs.path("sha256:../../etc/passwd")


def test_writer_discards_temp_file_on_error(tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    with pytest.raises(RuntimeError), blobs.writer() as sink:
        sink.write(b"partial")
        raise RuntimeError("boom")
    assert list((tmp_path / "sha256").iterdir()) == []


def test_layer_descriptor(tmp_path: Path) -> None:
    layer = write_layer(BlobDir(tmp_path), {"a": b"1"})
    d = layer.descriptor()
    assert (d.media_type, d.digest, d.size) == (mt.OCI_LAYER_GZIP, layer.digest, layer.size)

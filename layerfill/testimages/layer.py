"""Deterministic gzip'd tar layers, streamed into a content-addressed blob directory.

The tar stream is hashed (diff_id) on its way into gzip, and the gzip stream is hashed (digest) on its
way to disk, so a layer of any size is built in constant memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import tarfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import Descriptor
from layerfill.oci.reference import Digest

_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class File:
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Directory:
    mode: int = 0o755


@dataclass(frozen=True, slots=True)
class Symlink:
    target: str


Entry = bytes | File | Directory | Symlink


@dataclass(frozen=True, slots=True)
class LayerBlob:
    digest: str  # of the compressed blob
    size: int
    diff_id: str  # digest of the uncompressed tar, as listed in the config's rootfs.diff_ids
    uncompressed_size: int
    media_type: str = mt.OCI_LAYER_GZIP

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


class BlobDir:
    """`<layout>/blobs`: blobs stored at `<algorithm>/<hex>`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        parsed = Digest.parse(digest)  # also keeps the path inside the blob dir
        return self.root / parsed.algorithm / parsed.hex

    def write_bytes(self, data: bytes) -> tuple[str, int]:
        with self.writer() as sink:
            sink.write(data)
        return sink.digest, sink.size

    @contextmanager
    def writer(self) -> Iterator[_HashingSink]:
        """A sink that lands at its digest's path when the block exits without error."""
        tmp = self.root / "sha256" / f".tmp-{uuid.uuid4().hex}"
        try:
            with tmp.open("wb") as handle:
                sink = _HashingSink(handle)
                yield sink
            os.replace(tmp, self.path(sink.digest))
        finally:
            tmp.unlink(missing_ok=True)


class _HashingSink(io.RawIOBase):
    """Write-through that hashes and counts what passes."""

    def __init__(self, target: BinaryIO | io.RawIOBase | gzip.GzipFile) -> None:
        super().__init__()
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._hash.update(data)
        self.size += len(data)
        self._target.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


class _RandomReader(io.RawIOBase):
    """`size` bytes of seeded pseudo-random data, produced on demand."""

    def __init__(self, size: int, seed: int) -> None:
        super().__init__()
        self._left = size
        self._random = random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        self._left -= n
        return self._random.randbytes(n)


def _normalize_path(path: str) -> str:
    """`/a/b/` and `a/b` name the same entry; `.`, `..`, empty parts, backslashes and NUL are refused."""
    if "\\" in path or "\x00" in path:
        raise ValueError(f"invalid layer path {path!r}: backslash or NUL")
    parts = path.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid layer path {path!r}: needs a name, without empty, '.' or '..' parts")
    return "/".join(parts)


def _tarinfo(name: str, entry: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    data: bytes | None = None
    if isinstance(entry, Directory):
        info.type, info.mode = tarfile.DIRTYPE, entry.mode
    elif isinstance(entry, Symlink):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
    else:
        file = entry if isinstance(entry, File) else File(entry)
        info.mode, info.size, data = file.mode, len(file.data), file.data
    return info, data


def _with_parents(files: Mapping[str, Entry]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for raw_path, entry in files.items():
        path = _normalize_path(raw_path)
        for parent in list(PurePosixPath(path).parents)[:-1]:
            if not isinstance(entries.setdefault(str(parent), Directory()), Directory):
                raise ValueError(f"layer path {raw_path!r} lies under the non-directory {str(parent)!r}")
        if path in entries and not isinstance(entries[path], Directory):
            raise ValueError(f"duplicate layer path {raw_path!r}")
        entries[path] = entry
    return entries


@contextmanager
def _layer_stream(blobs: BlobDir, compresslevel: int) -> Iterator[tuple[tarfile.TarFile, list[LayerBlob]]]:
    """Yield a tar writer; on exit the finished layer is appended to the list."""
    result: list[LayerBlob] = []
    with (
        blobs.writer() as compressed,
        # filename="" and mtime=0 keep the gzip header free of anything that varies between runs.
        gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=compresslevel, mtime=0) as gz,
    ):
        uncompressed = _HashingSink(gz)
        with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.GNU_FORMAT, bufsize=_CHUNK) as tar:
            yield tar, result
    result.append(LayerBlob(compressed.digest, compressed.size, uncompressed.digest, uncompressed.size))


def write_layer(blobs: BlobDir, files: Mapping[str, Entry], *, compresslevel: int = 6) -> LayerBlob:
    """Build a layer from `path -> bytes | File | Directory | Symlink`; parents are added as directories."""
    with _layer_stream(blobs, compresslevel) as (tar, result):
        for name, entry in sorted(_with_parents(files).items()):
            info, data = _tarinfo(name, entry)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return result[0]


def random_layer(
    blobs: BlobDir,
    size_bytes: int,
    seed: int,
    *,
    path: str = "random/data.bin",
    compresslevel: int = 1,
) -> LayerBlob:
    """A layer holding one file of `size_bytes` incompressible seeded bytes (plus tar headers)."""
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    name = _normalize_path(path)
    with _layer_stream(blobs, compresslevel) as (tar, result):
        for parent in reversed(list(PurePosixPath(name).parents)[:-1]):
            tar.addfile(_tarinfo(str(parent), Directory())[0])
        info, _ = _tarinfo(name, File(b""))
        info.size = size_bytes
        tar.copybufsize = _CHUNK
        tar.addfile(info, _RandomReader(size_bytes, seed))  # type: ignore[arg-type]
    return result[0]

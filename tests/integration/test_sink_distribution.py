"""DistributionSink and RegistrySink against the devstack: versitygw (S3) and CNCF distribution v3 as
upstream (:15000) and as a pull-through proxy (:15001) whose storage is the bucket under /proxy.

Every test uses its own repository names and freshly random blob content, since the stack is shared."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from minio import Minio
from pydantic import SecretStr

from layerfill.config.settings import S3Settings
from layerfill.devstack.paths import default_paths
from layerfill.oci import mediatypes as mt
from layerfill.sinks.base import (
    BlobSpec,
    Presence,
    SinkError,
    SinkIntegrityError,
    SinkUnavailable,
    StoreResult,
)
from layerfill.sinks.distribution import BlobNotFound, BlobTooLarge, DistributionSink, MiB
from layerfill.sinks.layout import blob_data_key, layer_link_key, repository_prefix, tag_link_key
from layerfill.sinks.registry import RegistrySink
from layerfill.sinks.s3client import make_minio

pytestmark = pytest.mark.integration

SMALL_PART = 5 * MiB  # S3's minimum part size: multipart uploads with a few MiB of data


# -- devstack access ---------------------------------------------------------------------------------


def _devstack_env() -> dict[str, str]:
    path = default_paths().env_file
    if not path.is_file():
        pytest.fail(f"devstack env file {path} is missing: run `layerfill devstack up` first")
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip("'\"")
    return env


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return _devstack_env()


@pytest.fixture(scope="module")
def s3(env: dict[str, str]) -> S3Settings:
    return S3Settings(
        endpoint=env["LAYERFILL_S3__ENDPOINT"],
        access_key=env["LAYERFILL_S3__ACCESS_KEY"],
        secret_key=env["LAYERFILL_S3__SECRET_KEY"],
        bucket=env["LAYERFILL_S3__BUCKET"],
        root_directory=env["LAYERFILL_S3__ROOT_DIRECTORY"],
    )


@pytest.fixture(scope="module")
def client(s3: S3Settings) -> Minio:
    return make_minio(s3)


@pytest.fixture
def sink(s3: S3Settings) -> Iterator[DistributionSink]:
    with DistributionSink(s3, part_size=SMALL_PART) as s:
        yield s


@pytest.fixture
def cleanup(client: Minio, s3: S3Settings) -> Iterator[Callable[[str], None]]:
    """Register key prefixes to delete after the test, so the shared bucket does not fill up."""
    prefixes: list[str] = []
    yield prefixes.append
    for prefix in prefixes:
        for item in client.list_objects(s3.bucket, prefix=prefix, recursive=True):
            client.remove_object(s3.bucket, item.object_name)


def new_repo(kind: str = "sinks") -> str:
    return f"layerfill-test/{kind}-{uuid.uuid4().hex[:12]}"


# -- blob sources ------------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Source:
    """A BlobSource over fixed bytes (or any chunk generator) that counts how often it was opened."""

    def __init__(self, data: bytes | None = None, chunks: Callable[[], Iterable[bytes]] | None = None) -> None:
        self._chunks = chunks or (lambda: (data[i : i + MiB] for i in range(0, len(data or b""), MiB)))
        self.opened = 0

    @contextmanager
    def __call__(self) -> Iterator[Iterable[bytes]]:
        self.opened += 1
        yield self._chunks()


def blob_of(data: bytes) -> tuple[BlobSpec, Source]:
    return BlobSpec(sha256(data), len(data), mt.OCI_LAYER_GZIP), Source(data)


def object_bytes(client: Minio, bucket: str, key: str) -> bytes | None:
    try:
        response = client.get_object(bucket, key)
    except Exception:
        return None
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def open_uploads(client: Minio, bucket: str, key: str) -> list:
    return list(client._list_multipart_uploads(bucket, prefix=key).uploads)


# -- storing blobs -----------------------------------------------------------------------------------


def test_store_then_store_again_is_present(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    repo = new_repo()
    data = os.urandom(300_000)
    blob, source = blob_of(data)
    cleanup(repository_prefix(s3.root_directory, repo))
    cleanup(blob_data_key(s3.root_directory, blob.digest))

    assert sink.blob_presence(repo, blob.digest) is Presence.ABSENT
    assert sink.store_blob(repo, blob, source) == StoreResult("fetched", len(data))
    assert object_bytes(client, s3.bucket, blob_data_key(s3.root_directory, blob.digest)) == data
    link = object_bytes(client, s3.bucket, layer_link_key(s3.root_directory, repo, blob.digest))
    assert link == blob.digest.encode()  # no trailing newline
    assert sink.blob_presence(repo, blob.digest) is Presence.LINKED

    assert sink.store_blob(repo, blob, source) == StoreResult("present", 0)
    assert source.opened == 1
    assert sink.blob_size(blob.digest) == len(data)


def test_data_without_link_only_gets_the_link(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    first, second = new_repo(), new_repo()
    data = os.urandom(12 * MiB)  # multipart with 5 MiB parts
    blob, source = blob_of(data)
    for repo in (first, second):
        cleanup(repository_prefix(s3.root_directory, repo))
    cleanup(blob_data_key(s3.root_directory, blob.digest))

    assert sink.store_blob(first, blob, source).outcome == "fetched"
    assert sink.blob_presence(second, blob.digest) is Presence.DATA_ONLY
    assert sink.store_blob(second, blob, source) == StoreResult("linked", 0)
    assert source.opened == 1
    assert sink.blob_presence(second, blob.digest) is Presence.LINKED
    assert object_bytes(client, s3.bucket, blob_data_key(s3.root_directory, blob.digest)) == data


def test_a_corrupt_link_is_rewritten(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    repo = new_repo()
    blob, source = blob_of(os.urandom(1000))
    cleanup(repository_prefix(s3.root_directory, repo))
    cleanup(blob_data_key(s3.root_directory, blob.digest))
    sink.store_blob(repo, blob, source)
    key = layer_link_key(s3.root_directory, repo, blob.digest)
    client.put_object(s3.bucket, key, io.BytesIO(b"garbage"), 7)

    assert sink.blob_presence(repo, blob.digest) is Presence.DATA_ONLY
    assert sink.store_blob(repo, blob, source) == StoreResult("linked", 0)
    assert object_bytes(client, s3.bucket, key) == blob.digest.encode()


@pytest.mark.parametrize("size", [1000, 12 * MiB + 17], ids=["single-put", "multipart"])
def test_digest_mismatch_leaves_nothing_behind(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None], size: int
) -> None:
    repo = new_repo()
    data = os.urandom(size)
    claimed = BlobSpec(sha256(data + b"!"), size, None)  # right size, wrong content
    data_key = blob_data_key(s3.root_directory, claimed.digest)
    cleanup(repository_prefix(s3.root_directory, repo))
    cleanup(data_key)

    with pytest.raises(SinkIntegrityError, match="digest mismatch"):
        sink.store_blob(repo, claimed, Source(data))
    assert object_bytes(client, s3.bucket, data_key) is None
    assert open_uploads(client, s3.bucket, data_key) == []
    assert object_bytes(client, s3.bucket, layer_link_key(s3.root_directory, repo, claimed.digest)) is None
    assert sink.blob_presence(repo, claimed.digest) is Presence.ABSENT


@pytest.mark.parametrize("delta", [-1, 1], ids=["short", "long"])
def test_size_mismatch_leaves_nothing_behind(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None], delta: int
) -> None:
    repo = new_repo()
    data = os.urandom(11 * MiB)
    claimed = BlobSpec(sha256(data), len(data) + delta, None)  # the data hashes right, the size is off
    data_key = blob_data_key(s3.root_directory, claimed.digest)
    cleanup(data_key)
    cleanup(repository_prefix(s3.root_directory, repo))

    with pytest.raises(SinkIntegrityError, match="size mismatch"):
        sink.store_blob(repo, claimed, Source(data))
    assert object_bytes(client, s3.bucket, data_key) is None
    assert open_uploads(client, s3.bucket, data_key) == []


def test_source_failure_propagates_unchanged_and_leaves_nothing(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    repo = new_repo()
    data = os.urandom(12 * MiB)
    blob = BlobSpec(sha256(data), len(data), None)
    data_key = blob_data_key(s3.root_directory, blob.digest)
    cleanup(data_key)
    boom = ConnectionResetError("upstream reset the connection")

    def broken() -> Iterator[bytes]:
        yield data[: 7 * MiB]  # one whole part is uploaded before the failure
        raise boom

    with pytest.raises(ConnectionResetError) as info:
        sink.store_blob(repo, blob, Source(chunks=broken))
    assert info.value is boom  # not turned into SinkUnavailable: it is the upstream's failure
    assert object_bytes(client, s3.bucket, data_key) is None
    assert open_uploads(client, s3.bucket, data_key) == []


def test_existing_data_of_the_wrong_size_is_replaced(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    repo = new_repo()
    data = os.urandom(50_000)
    blob, source = blob_of(data)
    data_key = blob_data_key(s3.root_directory, blob.digest)
    cleanup(data_key)
    cleanup(repository_prefix(s3.root_directory, repo))
    client.put_object(s3.bucket, data_key, io.BytesIO(b"truncated"), 9)

    assert sink.store_blob(repo, blob, source) == StoreResult("fetched", len(data))
    assert object_bytes(client, s3.bucket, data_key) == data


def test_empty_blob(sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]) -> None:
    repo = new_repo()
    blob, source = blob_of(b"")
    cleanup(repository_prefix(s3.root_directory, repo))
    # The empty blob's data may be shared with other tests: leave it, only check it is right.
    assert sink.store_blob(repo, blob, source).outcome in ("fetched", "linked")
    assert object_bytes(client, s3.bucket, blob_data_key(s3.root_directory, blob.digest)) == b""
    with pytest.raises(SinkIntegrityError):
        sink.store_blob(new_repo(), BlobSpec(sha256(b"x"), 0, None), Source(b"x"))


def test_concurrent_stores_of_one_blob_both_succeed(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    repos = [new_repo(), new_repo()]
    data = os.urandom(13 * MiB)
    blob = BlobSpec(sha256(data), len(data), None)
    cleanup(blob_data_key(s3.root_directory, blob.digest))
    for repo in repos:
        cleanup(repository_prefix(s3.root_directory, repo))
    both_started = threading.Barrier(2, timeout=30)

    def chunks() -> Iterator[bytes]:
        both_started.wait()  # both workers have seen the blob as absent and are uploading
        for i in range(0, len(data), MiB):
            yield data[i : i + MiB]

    results: dict[str, StoreResult | BaseException] = {}

    def store(repo: str) -> None:
        try:
            results[repo] = sink.store_blob(repo, blob, Source(chunks=chunks))
        except BaseException as exc:
            results[repo] = exc

    threads = [threading.Thread(target=store, args=(repo,)) for repo in repos]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {repo: StoreResult("fetched", len(data)) for repo in repos}
    stored = object_bytes(client, s3.bucket, blob_data_key(s3.root_directory, blob.digest))
    assert stored is not None and sha256(stored) == blob.digest
    assert all(sink.blob_presence(repo, blob.digest) is Presence.LINKED for repo in repos)


def test_storage_down_is_sink_unavailable(s3: S3Settings) -> None:
    down = s3.model_copy(update={"endpoint": "http://127.0.0.1:1"})
    blob, source = blob_of(b"abc")
    with DistributionSink(down) as sink:
        with pytest.raises(SinkUnavailable, match="S3 stat"):
            sink.blob_presence(new_repo(), blob.digest)
        with pytest.raises(SinkUnavailable):
            sink.store_blob(new_repo(), blob, source)
    assert source.opened == 0


def test_wrong_credentials_are_sink_unavailable(s3: S3Settings) -> None:
    wrong = s3.model_copy(update={"secret_key": SecretStr("not-the-secret")})
    with DistributionSink(wrong) as sink, pytest.raises(SinkUnavailable, match=r"SignatureDoesNotMatch|AccessDenied"):
        sink.blob_presence(new_repo(), sha256(b"abc"))


# -- manifests and read helpers ----------------------------------------------------------------------


def test_manifests_and_read_helpers(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    parent = new_repo("helpers")
    repo, other = f"{parent}/app", f"{parent}/nested/app2"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "nonce": uuid.uuid4().hex}).encode()
    digest = sha256(manifest)
    cleanup(repository_prefix(s3.root_directory, parent))
    cleanup(blob_data_key(s3.root_directory, digest))

    assert sink.manifest_presence(repo, digest) is Presence.ABSENT
    assert sink.store_manifest(repo, digest, mt.OCI_MANIFEST, manifest) == StoreResult("fetched", len(manifest))
    assert sink.store_manifest(repo, digest, mt.OCI_MANIFEST, manifest) == StoreResult("present", 0)
    assert sink.manifest_presence(other, digest) is Presence.DATA_ONLY
    assert sink.store_manifest(other, digest, mt.OCI_MANIFEST, manifest) == StoreResult("linked", 0)
    assert sink.manifest_presence(other, digest) is Presence.LINKED
    # A manifest link is not a layer link: the blob endpoint of the repository does not serve it.
    assert sink.blob_presence(repo, digest) is Presence.DATA_ONLY

    assert sink.list_manifest_revisions(repo) == [digest]
    assert sink.read_blob_bytes(digest) == manifest
    assert sink.blob_size(digest) == len(manifest)
    with pytest.raises(BlobTooLarge):
        sink.read_blob_bytes(digest, max_bytes=len(manifest) - 1)
    with pytest.raises(BlobNotFound):
        sink.read_blob_bytes(sha256(os.urandom(8)))
    assert sink.blob_size(sha256(os.urandom(8))) is None

    repositories = sink.list_repositories()
    assert repo in repositories and other in repositories
    assert parent not in repositories and f"{parent}/nested" not in repositories

    assert sink.list_tags(repo) == {}
    for tag in ("latest", "1.0"):
        key = tag_link_key(s3.root_directory, repo, tag)
        client.put_object(s3.bucket, key, io.BytesIO(digest.encode()), len(digest))
    assert sink.list_tags(repo) == {"latest": digest, "1.0": digest}


def test_manifest_that_does_not_hash_to_its_digest_is_refused(
    sink: DistributionSink, client: Minio, s3: S3Settings
) -> None:
    manifest = b'{"schemaVersion": 2}'
    wrong = sha256(manifest + b" ")
    with pytest.raises(SinkIntegrityError, match="hashes to"):
        sink.store_manifest(new_repo(), wrong, mt.OCI_MANIFEST, manifest)
    assert object_bytes(client, s3.bucket, blob_data_key(s3.root_directory, wrong)) is None


def test_stored_data_that_does_not_match_is_reported(
    sink: DistributionSink, client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    digest = sha256(os.urandom(16))
    key = blob_data_key(s3.root_directory, digest)
    cleanup(key)
    client.put_object(s3.bucket, key, io.BytesIO(b"not it"), 6)
    with pytest.raises(SinkIntegrityError, match="hashes to"):
        sink.read_blob_bytes(digest)


# -- end to end: the proxy registry serves what the sink wrote ----------------------------------------


@dataclass(frozen=True)
class TinyImage:
    layer: bytes
    config: bytes
    manifest: bytes

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> list[tuple[BlobSpec, bytes]]:
        return [
            (BlobSpec(sha256(self.config), len(self.config), mt.OCI_CONFIG), self.config),
            (BlobSpec(sha256(self.layer), len(self.layer), mt.OCI_LAYER_GZIP), self.layer),
        ]


def tiny_image() -> TinyImage:
    """A one-layer OCI image with unique content (so none of its blobs exist in storage yet)."""
    files = {"etc/hello.txt": f"hello {uuid.uuid4()}\n".encode(), "bin/noise": os.urandom(4096)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(raw.getvalue())]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    return TinyImage(layer, config, manifest)


def push_to_registry(base_url: str, repo: str, image: TinyImage, tag: str = "v1") -> None:
    """Push with the plain distribution API: monolithic blob uploads, then the manifest."""
    for blob, data in image.blobs:
        start = requests.post(f"{base_url}/v2/{repo}/blobs/uploads/", timeout=30)
        assert start.status_code == 202, start.text
        location = requests.compat.urljoin(base_url, start.headers["Location"])
        done = requests.put(
            location,
            params={"digest": blob.digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert done.status_code == 201, done.text
    put = requests.put(
        f"{base_url}/v2/{repo}/manifests/{tag}",
        data=image.manifest,
        headers={"Content-Type": mt.OCI_MANIFEST},
        timeout=30,
    )
    assert put.status_code == 201, put.text


def test_proxy_serves_what_the_sink_wrote(
    env: dict[str, str], s3: S3Settings, sink: DistributionSink, cleanup: Callable[[str], None], tmp_path: Path
) -> None:
    """The image exists nowhere upstream, so every byte the proxy serves must come from our writes."""
    proxy = env["LAYERFILL_DEVSTACK_PROXY_URL"]
    repo = new_repo("served")
    image = tiny_image()
    cleanup(repository_prefix(s3.root_directory, repo))
    for blob, _ in image.blobs:
        cleanup(blob_data_key(s3.root_directory, blob.digest))
    cleanup(blob_data_key(s3.root_directory, image.manifest_digest))
    manifest_url = f"{proxy}/v2/{repo}/manifests/{image.manifest_digest}"
    accept = {"Accept": mt.ACCEPT_MANIFESTS}

    assert requests.get(manifest_url, headers=accept, timeout=30).status_code != 200

    for blob, data in image.blobs:
        assert sink.store_blob(repo, blob, Source(data)).outcome == "fetched"
    assert sink.store_manifest(repo, image.manifest_digest, mt.OCI_MANIFEST, image.manifest).outcome == "fetched"

    served = requests.get(manifest_url, headers=accept, timeout=30)
    assert served.status_code == 200, served.text
    assert served.content == image.manifest
    assert served.headers["Docker-Content-Digest"] == image.manifest_digest
    assert served.headers["Content-Type"] == mt.OCI_MANIFEST
    for blob, data in image.blobs:
        got = requests.get(f"{proxy}/v2/{repo}/blobs/{blob.digest}", timeout=30)
        assert got.status_code == 200, got.text
        assert got.content == data

    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo is not installed: the HTTP checks above passed, the real-client pull was not run")
    host = proxy.split("://", 1)[1]
    result = subprocess.run(
        [
            skopeo,
            "copy",
            "--src-tls-verify=false",
            f"docker://{host}/{repo}@{image.manifest_digest}",
            f"oci:{tmp_path / 'layout'}:pulled",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for blob, data in image.blobs:
        algorithm, hex_part = blob.digest.split(":")
        assert (tmp_path / "layout" / "blobs" / algorithm / hex_part).read_bytes() == data


def test_registry_sink_warms_the_proxy(env: dict[str, str], s3: S3Settings) -> None:
    upstream, proxy = env["LAYERFILL_DEVSTACK_UPSTREAM_URL"], env["LAYERFILL_DEVSTACK_PROXY_URL"]
    repo = new_repo("warm")
    image = tiny_image()
    push_to_registry(upstream, repo, image)
    # No cleanup here: the proxy keeps writing its copy after answering (seen with v3: data and links
    # reappeared after a cleanup), so deleting could leave links without data. The image is ~5 KB.

    storage = DistributionSink(s3)
    with RegistrySink(proxy) as warm:
        assert warm.blob_presence(repo, image.blobs[0][0].digest) is Presence.UNKNOWN
        assert storage.manifest_presence(repo, image.manifest_digest) is Presence.ABSENT

        result = warm.store_manifest(repo, image.manifest_digest, mt.OCI_MANIFEST, image.manifest)
        assert result == StoreResult("fetched", len(image.manifest))
        never_opened = Source(b"")
        for blob, data in image.blobs:
            assert warm.store_blob(repo, blob, never_opened) == StoreResult("fetched", len(data))
        assert never_opened.opened == 0

        wrong_size = BlobSpec(image.blobs[1][0].digest, image.blobs[1][0].size + 1, None)
        with pytest.raises(SinkIntegrityError, match="expected"):
            warm.store_blob(repo, wrong_size, never_opened)
        with pytest.raises(SinkError) as missing:
            warm.store_blob(repo, BlobSpec(sha256(os.urandom(8)), 8, None), never_opened)
        assert not isinstance(missing.value, SinkUnavailable | SinkIntegrityError)

    # The proxy stores what it served; it may finish writing just after the response ends.
    deadline = time.monotonic() + 20
    while True:
        states = [storage.manifest_presence(repo, image.manifest_digest)]
        states += [storage.blob_presence(repo, blob.digest) for blob, _ in image.blobs]
        if all(state is Presence.LINKED for state in states) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert states == [Presence.LINKED] * 3
    for blob, data in image.blobs:
        assert storage.read_blob_bytes(blob.digest) == data
    storage.close()


# -- bounded memory ----------------------------------------------------------------------------------


def generated_blob(size: int) -> tuple[BlobSpec, Callable[[], Iterator[bytes]], Callable[[int], bytes]]:
    """A deterministic stream of `size` bytes in 1 MiB chunks, no two alike: spec, stream, chunk i."""
    assert size % MiB == 0
    block = os.urandom(MiB)
    salt = uuid.uuid4().bytes

    def chunk_at(i: int) -> bytes:
        return salt + i.to_bytes(8, "big") + block[24:]

    def chunks() -> Iterator[bytes]:
        for i in range(size // MiB):
            yield chunk_at(i)

    h = hashlib.sha256()
    for chunk in chunks():
        h.update(chunk)
    return BlobSpec(f"sha256:{h.hexdigest()}", size, mt.OCI_LAYER_GZIP), chunks, chunk_at


class PeakRss:
    """Samples this process's RSS in a thread; `growth` is the peak above the starting value."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start = self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


LARGE_SIZES = [pytest.param(512 * MiB, id="512MiB")]
if os.environ.get("LAYERFILL_TEST_1GIB") == "1":
    LARGE_SIZES.append(pytest.param(1024 * MiB, id="1GiB"))


@pytest.mark.parametrize("size", LARGE_SIZES)
def test_large_blob_streams_with_bounded_memory(
    s3: S3Settings, client: Minio, cleanup: Callable[[str], None], size: int
) -> None:
    repo = new_repo("large")
    blob, chunks, chunk_at = generated_blob(size)
    data_key = blob_data_key(s3.root_directory, blob.digest)
    cleanup(data_key)
    cleanup(repository_prefix(s3.root_directory, repo))

    with DistributionSink(s3) as sink, PeakRss() as rss:  # the default 16 MiB parts
        result = sink.store_blob(repo, blob, Source(chunks=chunks))
    assert result == StoreResult("fetched", size)
    assert rss.growth < 100 * MiB, f"RSS grew by {rss.growth / MiB:.1f} MiB"
    assert client.stat_object(s3.bucket, data_key).size == size
    # Spot-check the stored bytes: the last chunk, fetched by range.
    last = client.get_object(s3.bucket, data_key, offset=size - MiB, length=MiB)
    try:
        assert last.read() == chunk_at(size // MiB - 1)
    finally:
        last.close()
        last.release_conn()


def test_concurrent_large_blobs_hold_part_buffers_within_the_budget(
    s3: S3Settings, client: Minio, cleanup: Callable[[str], None]
) -> None:
    """8 transfers of 16 MiB parts against a 32 MiB budget: without it they would hold 8-16 parts at once."""
    from concurrent.futures import ThreadPoolExecutor

    from layerfill.sinks.budget import ByteBudget

    repo = new_repo("budget")
    cleanup(repository_prefix(s3.root_directory, repo))
    blobs = [generated_blob(64 * MiB) for _ in range(8)]
    for blob, _, _ in blobs:
        cleanup(blob_data_key(s3.root_directory, blob.digest))
    budget = ByteBudget(32 * MiB)

    with (
        DistributionSink(s3, budget=budget, max_connections=8) as sink,
        PeakRss() as rss,
        ThreadPoolExecutor(8) as pool,
    ):
        results = list(pool.map(lambda b: sink.store_blob(repo, b[0], Source(chunks=b[1])), blobs))
    assert results == [StoreResult("fetched", 64 * MiB)] * 8
    assert budget.peak == 32 * MiB  # the budget, not the 8 transfers, was the limit
    assert budget.held == 0
    assert rss.growth < 96 * MiB, f"RSS grew by {rss.growth / MiB:.1f} MiB"
    for blob, _, chunk_at in blobs:
        assert client.stat_object(s3.bucket, blob_data_key(s3.root_directory, blob.digest)).size == blob.size
        last = client.get_object(s3.bucket, blob_data_key(s3.root_directory, blob.digest), offset=63 * MiB)
        try:
            assert last.read() == chunk_at(63)
        finally:
            last.close()
            last.release_conn()


# -- payload hashes ----------------------------------------------------------------------------------


def _reader(data: bytes):  # type: ignore[no-untyped-def]
    from layerfill.sinks.verified_stream import VerifyingReader

    return VerifyingReader([data], sha256(data), len(data))


def test_a_single_put_signed_with_the_blobs_digest_is_checked_by_the_server(
    client: Minio, s3: S3Settings, cleanup: Callable[[str], None]
) -> None:
    from minio.error import S3Error

    from layerfill.sinks.budget import ByteBudget
    from layerfill.sinks.multipart import upload

    data, key = os.urandom(200_000), f"layerfill-test/payload-{uuid.uuid4().hex[:12]}"
    cleanup(key)
    budget = ByteBudget(8 * MiB)
    upload(client, s3.bucket, key, _reader(data), len(data), part_size=SMALL_PART, budget=budget,
           content_type="application/octet-stream", sha256=sha256(data).split(":")[1])  # fmt: skip
    assert object_bytes(client, s3.bucket, key) == data
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(S3Error) as refused:
        upload(client, s3.bucket, key + "-wrong", _reader(data), len(data), part_size=SMALL_PART, budget=budget,
               content_type="application/octet-stream", sha256=wrong)  # fmt: skip
    assert "sha256" in refused.value.code.lower() or "digest" in refused.value.code.lower(), refused.value.code
    assert object_bytes(client, s3.bucket, key + "-wrong") is None


@pytest.mark.parametrize("sign_parts", [False, True])
def test_multipart_blobs_store_with_signed_or_unsigned_parts(
    s3: S3Settings, client: Minio, cleanup: Callable[[str], None], sign_parts: bool
) -> None:
    repo, data = new_repo(), os.urandom(2 * SMALL_PART + 12345)
    blob, source = blob_of(data)
    cleanup(repository_prefix(s3.root_directory, repo))
    cleanup(blob_data_key(s3.root_directory, blob.digest))
    with DistributionSink(s3.model_copy(update={"sign_parts": sign_parts}), part_size=SMALL_PART) as sink:
        assert sink.store_blob(repo, blob, source) == StoreResult("fetched", len(data))
    assert object_bytes(client, s3.bucket, blob_data_key(s3.root_directory, blob.digest)) == data

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from layerfill.oci.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from layerfill.remote import (
    Credentials,
    DigestMismatch,
    InvalidInput,
    ManifestTooLarge,
    NotFound,
    RateLimited,
    RegistryClient,
    Unauthorized,
    UpstreamError,
)
from layerfill.remote.client import MAX_MANIFEST_BYTES, _redirect_target
from tests.unit.registry_fake import FakeRegistry, Fault, digest_of, fast_retry

pytestmark = pytest.mark.unit

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
MPATH = "/v2/team/app/manifests/v1"


def client(registry: FakeRegistry, **kwargs: object) -> RegistryClient:
    kwargs.setdefault("retry", fast_retry())
    return RegistryClient(registry.url, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> FakeRegistry:
    with FakeRegistry() as reg:
        reg.add_manifest("team/app", MANIFEST, tag="v1")
        yield reg


def test_manifest_by_tag(registry: FakeRegistry) -> None:
    manifest = client(registry).get_manifest("team/app", "v1")
    assert manifest == (MANIFEST, OCI_MANIFEST, digest_of(MANIFEST))
    content, media_type, digest = manifest
    assert (manifest.content, manifest.media_type, manifest.digest) == (content, media_type, digest)
    accept = registry.requests_to(MPATH)[0].headers["Accept"]
    assert {t.strip() for t in accept.split(",")} == {OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST}


def test_manifest_by_digest_is_verified(registry: FakeRegistry) -> None:
    digest = digest_of(MANIFEST)
    assert client(registry).get_manifest("team/app", digest).digest == digest
    registry.manifests[("team/app", digest)] = (b'{"tampered":1}', OCI_MANIFEST)
    with pytest.raises(DigestMismatch) as info:
        client(registry).get_manifest("team/app", digest)
    # Bytes that did not verify are worth a retry later (layerfill.kafka.classify).
    assert info.value.expected == digest and info.value.transient is True


def test_tag_checked_against_docker_content_digest(registry: FakeRegistry) -> None:
    wrong = "sha256:" + "0" * 64
    registry.script(MPATH, Fault(extra_headers={"Docker-Content-Digest": wrong}))
    with pytest.raises(DigestMismatch, match=wrong):
        client(registry).get_manifest("team/app", "v1")


def test_media_type_from_body_when_content_type_is_generic(registry: FakeRegistry) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": []}).encode()
    registry.add_manifest("team/app", body, "application/json; charset=utf-8", tag="list")
    assert client(registry).get_manifest("team/app", "list").media_type == DOCKER_MANIFEST_LIST


def test_manifest_too_large_by_declared_length(registry: FakeRegistry) -> None:
    with pytest.raises(ManifestTooLarge) as info:
        client(registry, max_manifest_bytes=len(MANIFEST) - 1).get_manifest("team/app", "v1")
    assert info.value.size == len(MANIFEST) and info.value.transient is False


def test_manifest_too_large_while_streaming_without_length(registry: FakeRegistry) -> None:
    big = json.dumps({"schemaVersion": 2, "pad": "x" * 300_000}).encode()
    registry.add_manifest("team/app", big, tag="big")
    registry.script("/v2/team/app/manifests/big", Fault(no_length=True))
    with pytest.raises(ManifestTooLarge) as info:
        client(registry, max_manifest_bytes=100_000).get_manifest("team/app", "big")
    assert 100_000 < info.value.size < len(big)  # stopped early, not read to the end


def test_default_manifest_cap_is_4_mib() -> None:
    assert MAX_MANIFEST_BYTES == 4 * 1024 * 1024


def test_manifest_body_cut_mid_stream_is_read_again(registry: FakeRegistry) -> None:
    registry.script(MPATH, Fault(truncate_after=10))
    assert client(registry).get_manifest("team/app", "v1").content == MANIFEST
    assert len(registry.requests_to(MPATH)) == 2


def test_503_then_success(registry: FakeRegistry) -> None:
    registry.script(MPATH, Fault(status=503), Fault(status=503))
    assert client(registry).get_manifest("team/app", "v1").content == MANIFEST


def test_persistent_429_becomes_rate_limited_with_retry_after(registry: FakeRegistry) -> None:
    registry.script(MPATH, *[Fault(status=429, headers={"Retry-After": "7"}) for _ in range(3)])
    sleeps: list[float] = []
    with pytest.raises(RateLimited) as info:
        client(registry, retry=fast_retry(max_attempts=2, sleeps=sleeps)).get_manifest("team/app", "v1")
    assert sleeps == [7.0]
    assert info.value.retry_after == 7.0 and info.value.transient is True and info.value.status == 429


def test_persistent_500_is_transient(registry: FakeRegistry) -> None:
    registry.script(MPATH, *[Fault(status=500) for _ in range(3)])
    with pytest.raises(UpstreamError) as info:
        client(registry, retry=fast_retry(max_attempts=3)).get_manifest("team/app", "v1")
    assert info.value.transient is True and info.value.status == 500
    assert type(info.value) is UpstreamError


def test_not_found_carries_the_registry_error_code(registry: FakeRegistry) -> None:
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN") as info:
        client(registry).get_manifest("team/app", "nope")
    assert info.value.status == 404 and info.value.transient is False
    assert len(registry.requests_to("/v2/team/app/manifests/nope")) == 1


def test_forbidden_is_unauthorized_at_once(registry: FakeRegistry) -> None:
    registry.script(MPATH, Fault(status=403))
    with pytest.raises(Unauthorized) as info:
        client(registry).get_manifest("team/app", "v1")
    assert info.value.status == 403
    assert len(registry.requests_to(MPATH)) == 1


def test_upstream_prefix_is_prepended() -> None:
    with FakeRegistry() as registry:
        registry.add_manifest("library/alpine", MANIFEST, tag="3")
        assert client(registry, upstream_prefix="library/").get_manifest("alpine", "3").content == MANIFEST
        assert registry.requests_to("/v2/library/alpine/manifests/3")


@pytest.mark.parametrize(("repository", "reference"), [("../etc", "v1"), ("team/app", "../v1"), ("Team", "v1")])
def test_bad_input_refused_before_any_request(registry: FakeRegistry, repository: str, reference: str) -> None:
    with pytest.raises(InvalidInput):
        client(registry).get_manifest(repository, reference)
    with pytest.raises(InvalidInput):
        client(registry).blob_exists(repository, "sha256:../" + "a" * 61)
    assert registry.seen == []


def test_blob_exists(registry: FakeRegistry) -> None:
    digest = registry.add_blob("team/app", b"layer-bytes")
    c = client(registry)
    assert c.blob_exists("team/app", digest) == len(b"layer-bytes")
    assert c.blob_exists("team/app", "sha256:" + "1" * 64) is None
    assert [s.method for s in registry.requests_to("/v2/team/app/blobs/")] == ["HEAD", "HEAD"]


def test_ping(registry: FakeRegistry) -> None:
    client(registry).ping()
    registry.script("/v2/", Fault(status=401))
    with pytest.raises(Unauthorized):
        client(registry).ping()


def test_basic_auth_end_to_end() -> None:
    with FakeRegistry(auth="basic") as registry:
        registry.add_manifest("team/app", MANIFEST, tag="v1")
        good = client(registry, credentials=Credentials(registry.username, registry.password))
        assert good.get_manifest("team/app", "v1").content == MANIFEST
        with pytest.raises(Unauthorized) as info:
            client(registry, credentials=("alice", "wrong-password")).get_manifest("team/app", "v1")
        assert "wrong-password" not in str(info.value) and "wrong-password" not in repr(info.value)


def test_docker_hub_like_flow() -> None:
    """Anonymous token from a realm on another host, `library/` prefix, blobs redirected to storage."""
    with FakeRegistry(auth="bearer", realm_host="localhost", storage_host="localhost") as registry:
        registry.add_manifest("library/alpine", MANIFEST, tag="latest")
        data = b"alpine-layer" * 1000
        digest = registry.add_blob("library/alpine", data)
        hub = client(registry, upstream_prefix="library")
        hub.ping()
        assert hub.get_manifest("alpine", "latest").content == MANIFEST
        assert hub.blob_exists("alpine", digest) == len(data)
        with hub.open_blob("alpine", digest) as blob:
            assert b"".join(blob) == data
        assert all("Authorization" not in s.headers for s in registry.requests_to("/token"))
        [storage] = registry.requests_to("/storage/")
        assert storage.host.startswith("localhost") and "Authorization" not in storage.headers


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_redirect_to_another_host_drops_authorization(auth: str) -> None:
    with FakeRegistry(auth=auth, storage_host="localhost", token_requires_credentials=True) as registry:
        data = b"q" * 5000
        digest = registry.add_blob("team/app", data)
        c = client(registry, credentials=Credentials(registry.username, registry.password))
        with c.open_blob("team/app", digest) as blob:
            assert b"".join(blob) == data
        [registry_get] = [s for s in registry.requests_to("/v2/team/app/blobs/") if "Authorization" in s.headers]
        assert registry_get.host.startswith("127.0.0.1")
        [storage] = registry.requests_to("/storage/")
        assert "Authorization" not in storage.headers
        assert "Cookie" not in storage.headers


def test_redirect_loop_is_cut(registry: FakeRegistry) -> None:
    registry.script(MPATH, *[Fault(status=307, headers={"Location": MPATH}) for _ in range(10)])
    with pytest.raises(UpstreamError, match="redirects"):
        client(registry).get_manifest("team/app", "v1")
    assert len(registry.requests_to(MPATH)) == 6


@pytest.mark.parametrize(
    ("location", "message"),
    [("", "Location"), ("ftp://x/y", "http"), ("http://s3.example/b", "plain http"), ("https://u:p@s3/b", "userinfo")],
)
def test_unsafe_redirects_are_refused(location: str, message: str) -> None:
    with pytest.raises(UpstreamError, match=message):
        _redirect_target("https://reg.example/v2/a/blobs/x", location)


def test_relative_redirect_is_resolved() -> None:
    assert _redirect_target("https://reg.example/v2/a/blobs/x", "/store/x?sig=1") == "https://reg.example/store/x?sig=1"


def test_concurrency_is_capped_per_upstream(registry: FakeRegistry) -> None:
    registry.delay = 0.03
    c = client(registry, max_concurrency=2)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: c.get_manifest("team/app", "v1").content, range(6)))
    assert results == [MANIFEST] * 6
    assert registry.max_in_flight == 2


def test_streaming_blob_keeps_its_slot(registry: FakeRegistry) -> None:
    digest = registry.add_blob("team/app", b"y" * 10)
    c = client(registry, max_concurrency=1)
    done = threading.Event()
    with c.open_blob("team/app", digest) as blob:
        thread = threading.Thread(target=lambda: (c.blob_exists("team/app", digest), done.set()))
        thread.start()
        assert not done.wait(0.2)
        assert b"".join(blob) == b"y" * 10
    assert done.wait(5)
    thread.join()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_url": "https://u:secret-pw@h"}, "base_url"),
        ({"upstream_prefix": "../x"}, "upstream_prefix"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": (1, -1)}, "timeout"),
        ({"max_manifest_bytes": 0}, "max_manifest_bytes"),
        ({"credential_hosts": ["a:1"]}, "credential_hosts"),
        ({"credentials": "alice:pw"}, "credentials"),
    ],
)
def test_constructor_names_the_bad_setting(kwargs: dict[str, object], field: str) -> None:
    settings: dict[str, object] = {"base_url": "https://reg.example", **kwargs}
    with pytest.raises(InvalidInput) as info:
        RegistryClient(**settings)  # type: ignore[arg-type]
    assert info.value.field == field
    assert "secret-pw" not in str(info.value)


def test_repr_hides_credentials() -> None:
    c = RegistryClient("https://reg.example", credentials=("bob", "s3cr3t-value"), upstream_prefix="library")
    assert "s3cr3t" not in repr(c)
    assert "bob" in repr(c) and "library/" in repr(c)
    c.close()


def test_environment_adds_no_credentials_or_proxies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine 127.0.0.1 login env password netrc-pass\nmachine localhost login env password netrc-pass\n"
    )
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FakeRegistry(storage_host="localhost") as registry:
        digest = registry.add_blob("team/app", b"env-test")
        with client(registry).open_blob("team/app", digest) as blob:
            assert b"".join(blob) == b"env-test"
        assert registry.seen and all("Authorization" not in s.headers for s in registry.seen)

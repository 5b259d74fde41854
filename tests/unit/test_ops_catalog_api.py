"""RegistryApi over real sockets against the in-process fake registry: pagination as distribution does it, tag
resolution, what is refused, and the enumeration order and resume positions `backfill --source api` relies on."""

from __future__ import annotations

import json

import pytest

from layerfill.oci.mediatypes import OCI_MANIFEST
from layerfill.ops.catalog import RegistryResponseError
from layerfill.ops.catalog_api import CatalogUnavailable, RegistryApi
from layerfill.ops.enumerate import list_repositories, stored_manifests
from tests.unit.registry_fake import FakeRegistry, Fault, fast_retry

pytestmark = pytest.mark.unit


def manifest(n: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [], "n": n}).encode()


def page(status: int = 200, link: str | None = None, **body: object) -> Fault:
    headers = {"Content-Type": "application/json", **({"Link": link} if link else {})}
    return Fault(status=status, headers=headers, body=json.dumps(body).encode())


def api(registry: FakeRegistry, **kwargs: object) -> RegistryApi:
    return RegistryApi(registry.url, retry=fast_retry(), page_size=2, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> FakeRegistry:
    with FakeRegistry() as reg:
        yield reg


def test_catalog_follows_link_until_the_last_page(registry: FakeRegistry) -> None:
    registry.script(
        "/v2/_catalog",
        page(link='</v2/_catalog?last=b&n=2>; rel="next"', repositories=["a", "b"]),
        page(link='</v2/_catalog?last=d%2Fe&n=2>; rel="next"', repositories=["c", "d/e"]),
        page(repositories=["f"]),
    )
    with api(registry) as client:
        assert client.list_repositories() == ["a", "b", "c", "d/e", "f"]
    assert [s.path for s in registry.requests_to("/v2/_catalog")] == [
        "/v2/_catalog?n=2",
        "/v2/_catalog?last=b&n=2",
        "/v2/_catalog?last=d%2Fe&n=2",
    ]


def test_catalog_stops_on_an_empty_page_and_drops_repeats(registry: FakeRegistry) -> None:
    registry.script(
        "/v2/_catalog",
        page(link='</v2/_catalog?last=b&n=2>; rel="next"', repositories=["a", "b"]),
        page(link='</v2/_catalog?last=c&n=2>; rel="next"', repositories=["b", "c"]),
        page(link='</v2/_catalog?last=z&n=2>; rel="next"', repositories=[]),
    )
    with api(registry) as client:
        assert client.list_repositories() == ["a", "b", "c"]
    assert len(registry.requests_to("/v2/_catalog")) == 3


def test_catalog_link_loop_and_foreign_links_are_refused(registry: FakeRegistry) -> None:
    registry.script("/v2/_catalog", page(link='</v2/_catalog?n=2>; rel="next"', repositories=["a"]))
    with api(registry) as client, pytest.raises(RegistryResponseError, match="does not end"):
        client.list_repositories()
    registry.script(
        "/v2/_catalog", page(link='<http://elsewhere:1/v2/_catalog?last=a>; rel="next"', repositories=["a"])
    )
    with api(registry) as client, pytest.raises(RegistryResponseError, match="leaves"):
        client.list_repositories()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_registry_without_catalog_is_named_with_the_way_out(registry: FakeRegistry, status: int) -> None:
    registry.script("/v2/_catalog", page(status, errors=[{"code": "UNSUPPORTED", "message": "no catalog"}]))
    with api(registry) as client, pytest.raises(CatalogUnavailable) as info:
        client.list_repositories()
    text = str(info.value)
    assert registry.url in text and f"status {status}" in text
    assert "--repository" in text and "--source storage" in text


def test_catalog_server_errors_are_retried_then_raised(registry: FakeRegistry) -> None:
    from layerfill.remote.errors import UpstreamError

    registry.script("/v2/_catalog", page(503), page(repositories=["a"]))
    with api(registry) as client:
        assert client.list_repositories() == ["a"]
    registry.script("/v2/_catalog", *[page(500)] * 4)
    with api(registry) as client, pytest.raises(UpstreamError) as info:
        client.list_repositories()
    assert not isinstance(info.value, CatalogUnavailable) and info.value.status == 500


def test_tags_resolved_by_head_grouped_by_digest_in_order(registry: FakeRegistry) -> None:
    d1 = registry.add_manifest("team/app", manifest(1), tag="1")
    registry.add_manifest("team/app", manifest(1), tag="latest")
    d2 = registry.add_manifest("team/app", manifest(2), tag="2")
    registry.script(
        "/v2/team/app/tags/list",
        page(link='</v2/team/app/tags/list?last=2&n=2>; rel="next"', name="team/app", tags=["1", "2"]),
        page(name="team/app", tags=["latest"]),
    )
    with api(registry) as client:
        items = list(stored_manifests(client, ["team/app"]))
    expected = sorted([(d1, ("1", "latest")), (d2, ("2",))])
    assert [(i.digest, i.tags) for i in items] == expected
    heads = registry.requests_to("/v2/team/app/manifests/", "HEAD")
    assert sorted(s.path.rsplit("/", 1)[1] for s in heads) == ["1", "2", "latest"]
    assert all("application/vnd.oci.image.index.v1+json" in s.headers["Accept"] for s in heads)
    assert all("application/vnd.docker.distribution.manifest.list.v2+json" in s.headers["Accept"] for s in heads)
    assert registry.requests_to("/v2/team/app/manifests/", "GET") == []  # HEAD told the digest


def test_head_without_digest_falls_back_to_get(registry: FakeRegistry) -> None:
    d1 = registry.add_manifest("team/app", manifest(1), tag="1")
    registry.script("/v2/team/app/manifests/1", Fault(status=200, headers={"Content-Type": OCI_MANIFEST}))
    with api(registry) as client:
        assert client.manifest_digest("team/app", "1") == d1
    assert [s.method for s in registry.requests_to("/v2/team/app/manifests/1")] == ["HEAD", "GET"]


def test_vanished_repository_and_tag_are_skipped_and_reported(registry: FakeRegistry) -> None:
    d1 = registry.add_manifest("team/app", manifest(1), tag="1")
    registry.script("/v2/gone/tags/list", page(404, errors=[{"code": "NAME_UNKNOWN", "message": "gone"}]))
    registry.script("/v2/team/app/tags/list", page(name="team/app", tags=["1", "deleted"]))
    with api(registry) as client:
        items = list(stored_manifests(client, ["gone", "team/app"]))
        assert [(i.repository, i.digest, i.tags) for i in items] == [("team/app", d1, ("1",))]
        assert client.skipped == [
            "gone: unknown to the registry (tags/list 404)",
            "team/app:deleted: tag vanished (HEAD 404)",
        ]


def test_resume_skips_earlier_repositories_without_asking_for_their_tags(registry: FakeRegistry) -> None:
    digests = {}
    for repo in ("a", "b", "c"):
        digests[repo] = [registry.add_manifest(repo, manifest(n), tag=f"t{n}") for n in (1, 2)]
        registry.script(f"/v2/{repo}/tags/list", page(name=repo, tags=["t1", "t2"]))
    registry.script("/v2/_catalog", page(repositories=["c", "a", "b"]))
    with api(registry) as client:
        repos = list_repositories(client)
        b_first = sorted(digests["b"])[0]
        items = list(stored_manifests(client, repos, after=("b", b_first)))
    assert [(i.repository, i.digest) for i in items] == [("b", sorted(digests["b"])[1])] + [
        ("c", d) for d in sorted(digests["c"])
    ]
    assert registry.requests_to("/v2/a/") == []  # done in the earlier run: no tags/list, no HEADs


def test_bearer_token_with_catalog_scope_and_credentials() -> None:
    with FakeRegistry(auth="bearer", token_requires_credentials=True) as registry:
        d1 = registry.add_manifest("team/app", manifest(1), tag="1")
        registry.script("/v2/_catalog", page(repositories=["team/app"]))
        registry.script("/v2/team/app/tags/list", page(name="team/app", tags=["1"]))
        with api(registry, credentials=(registry.username, registry.password)) as client:
            assert [(i.repository, i.digest) for i in stored_manifests(client, client.list_repositories())] == [
                ("team/app", d1)
            ]
        assert registry.requests_to("/token")


def test_invalid_tags_are_skipped_and_invalid_digests_refused(registry: FakeRegistry) -> None:
    d1 = registry.add_manifest("team/app", manifest(1), tag="1")
    registry.script("/v2/team/app/tags/list", page(name="team/app", tags=["../../x", "1", "-bad"]))
    with api(registry) as client:
        assert [(i.digest, i.tags) for i in stored_manifests(client, ["team/app"])] == [(d1, ("1",))]
        assert client.skipped == ["team/app: invalid tag '../../x' listed", "team/app: invalid tag '-bad' listed"]
    assert [s.path for s in registry.requests_to("/v2/team/app/manifests/")] == ["/v2/team/app/manifests/1"]
    registry.script("/v2/team/app/manifests/1", Fault(status=200, headers={"Docker-Content-Digest": "md5:abc"}))
    with api(registry) as client, pytest.raises(RegistryResponseError, match="Docker-Content-Digest"):
        client.manifest_digest("team/app", "1")

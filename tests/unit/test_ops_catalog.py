"""Pure parts of `backfill --source api`: Link pagination, catalog and tags bodies, grouping, endpoint choice."""

from __future__ import annotations

import json

import pytest

from layerfill.config.routes import Route
from layerfill.ops.catalog import (
    RegistryResponseError,
    distinct_in_order,
    group_tags,
    next_link,
    parse_catalog,
    parse_tags,
    registry_endpoint,
    resolve_next,
)

pytestmark = pytest.mark.unit

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # What distribution sends.
        ('</v2/_catalog?last=team%2Fapp&n=100>; rel="next"', "/v2/_catalog?last=team%2Fapp&n=100"),
        ("<https://r.example/v2/x/tags/list?last=v9>; rel=next", "https://r.example/v2/x/tags/list?last=v9"),
        # Several link-values, relation types case-insensitive and space-separated, commas inside URIs and quotes.
        ('</p?a=1,2>; rel="prev", </n?b=3>; title="x, y; z"; REL="last NEXT"', "/n?b=3"),
        ('</p>; rel="prev"', None),
        ("</p>", None),
        ("", None),
        (None, None),
    ],
)
def test_next_link(header: str | None, expected: str | None) -> None:
    assert next_link(header) == expected


@pytest.mark.parametrize("header", ["garbage", '<unclosed; rel="next"', '</a>; rel="next" junk'])
def test_next_link_refuses_what_is_not_a_link_header(header: str) -> None:
    with pytest.raises(RegistryResponseError, match="Link header"):
        next_link(header)


def test_resolve_next_stays_on_the_registry_and_endpoint() -> None:
    here = "https://r.example:5000/v2/_catalog?n=100"
    assert resolve_next(here, "/v2/_catalog?last=a&n=100") == "https://r.example:5000/v2/_catalog?last=a&n=100"
    assert resolve_next(here, "?last=a") == "https://r.example:5000/v2/_catalog?last=a"
    for elsewhere in (
        "https://evil.example/v2/_catalog?last=a",
        "http://r.example:5000/v2/_catalog?last=a",  # scheme downgrade
        "https://r.example:5001/v2/_catalog?last=a",
        "/v2/team/app/tags/list?last=a",
        "https://user@r.example:5000/v2/_catalog?last=a",
    ):
        with pytest.raises(RegistryResponseError, match="leaves"):
            resolve_next(here, elsewhere)


def test_parse_catalog() -> None:
    assert parse_catalog(b'{"repositories":["a","team/app"]}') == ["a", "team/app"]
    assert parse_catalog(b'{"repositories":null}') == []
    assert parse_catalog(b"{}") == []
    for bad, why in [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"repositories":"a"}', "not a list"),
        (b'{"repositories":[1]}', "not a list"),
        (b'{"repositories":["../etc"]}', "catalog"),
        (b'{"repositories":["UPPER"]}', "catalog"),
    ]:
        with pytest.raises(RegistryResponseError, match=why):
            parse_catalog(bad)


def test_parse_tags() -> None:
    body = json.dumps({"name": "team/app", "tags": ["1", "latest"]}).encode()
    assert parse_tags(body, "team/app") == ["1", "latest"]
    # distribution answers a repository it does not know (in proxy mode) with `"tags": null`.
    assert parse_tags(b'{"name":"team/app","tags":null}', "team/app") == []
    with pytest.raises(RegistryResponseError, match="names repository 'other'"):
        parse_tags(b'{"name":"other","tags":[]}', "team/app")
    with pytest.raises(RegistryResponseError, match="tags of team/app"):
        parse_tags(b'{"tags":"1"}', "team/app")


def test_group_tags_one_entry_per_digest_in_digest_order() -> None:
    assert group_tags({"latest": D2, "1": D1, "1.0": D2, "v": D1}) == {D1: ("1", "v"), D2: ("1.0", "latest")}
    assert list(group_tags({})) == []


def test_distinct_in_order() -> None:
    assert distinct_in_order(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def _route(**kw: object) -> Route:
    return Route(**{"registry": "cache:5000", "upstream_url": "https://up.example", **kw})  # type: ignore[arg-type]


def test_registry_endpoint_defaults_and_credentials() -> None:
    # Nothing configured: the registry events name, over https, anonymously.
    assert registry_endpoint([_route()], "cache:5000", None) == ("https://cache:5000", None)
    with_proxy = _route(proxy_url="http://cache.internal:5000/", proxy_username="u", proxy_password="p")
    assert registry_endpoint([with_proxy], "CACHE:5000", None) == ("http://cache.internal:5000", ("u", "p"))
    # An explicit URL that is the route's gets its credentials; any other URL gets none.
    assert registry_endpoint([with_proxy], "cache:5000", "http://cache.internal:5000/") == (
        "http://cache.internal:5000",
        ("u", "p"),
    )
    assert registry_endpoint([with_proxy], "cache:5000", "http://typo:5000") == ("http://typo:5000", None)
    # Credentials without a proxy_url apply to whatever URL is used; other registries' routes never count.
    creds_only = _route(proxy_username="u", proxy_password="p")
    other = _route(registry="other:1", proxy_url="http://other:1", proxy_username="x", proxy_password="y")
    assert registry_endpoint([creds_only, other], "cache:5000", "http://c:1") == ("http://c:1", ("u", "p"))


def test_registry_endpoint_refuses_ambiguous_routes() -> None:
    a = _route(repository_prefix="a", proxy_url="http://one:1")
    b = _route(repository_prefix="b", proxy_url="http://two:2")
    with pytest.raises(ValueError, match="--registry-url"):
        registry_endpoint([a, b], "cache:5000", None)
    assert registry_endpoint([a, b], "cache:5000", "http://one:1") == ("http://one:1", None)
    c = _route(repository_prefix="c", proxy_username="u", proxy_password="p")
    d = _route(repository_prefix="d", proxy_username="v", proxy_password="q")
    with pytest.raises(ValueError, match="different proxy credentials"):
        registry_endpoint([c, d], "cache:5000", "http://one:1")

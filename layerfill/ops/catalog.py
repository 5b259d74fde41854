"""Pure pieces of enumerating a registry through its /v2 API (`layerfill backfill --source api`): the RFC 5988
Link header distribution paginates with, the catalog and tags/list bodies, grouping tags by manifest digest, and
which registry URL and credentials to use. No I/O here; ops/catalog_api.py does the requests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urljoin, urlsplit

from layerfill.config.routes import Route
from layerfill.oci.reference import InvalidReference, validate_repository

# Distribution refuses n above its `catalog.maxentries` (default 1000) with 400 PAGINATION_NUMBER_INVALID.
PAGE_SIZE = 100

# One link-value: <URI-Reference> followed by `; param[=value]` pairs (values may be quoted strings).
_LINK_VALUE = re.compile(r"\s*<(?P<uri>[^>]*)>(?P<params>(?:\s*;\s*[^;,\"]*(?:\"(?:[^\"\\]|\\.)*\")?)*)\s*(?:,|$)")
_PARAM = re.compile(
    r";\s*(?P<key>[!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*(?:\"(?P<quoted>(?:[^\"\\]|\\.)*)\"|(?P<token>[^;,\s]*)))?"
)


class RegistryResponseError(ValueError):
    """A registry answered 200 with something that is not what the API promises."""


def next_link(header: str | None) -> str | None:
    """The URI of the `rel="next"` link of a Link header (RFC 5988/8288), or None. Relation types are
    case-insensitive and a `rel` may hold several space-separated ones (`rel="next last"`)."""
    if not header:
        return None
    pos = 0
    while pos < len(header):
        match = _LINK_VALUE.match(header, pos)
        if match is None or match.end() == pos:
            raise RegistryResponseError(f"unparseable Link header {header!r}")
        pos = match.end()
        for param in _PARAM.finditer(match.group("params")):
            if param.group("key").lower() != "rel":
                continue
            value = param.group("quoted") if param.group("quoted") is not None else param.group("token") or ""
            if "next" in value.lower().split():
                return match.group("uri").strip()
    return None


def resolve_next(current_url: str, link: str) -> str:
    """The absolute URL of the next page. It must stay on the same origin and endpoint path: a Link elsewhere is
    refused rather than followed (credentials are only meant for this registry, and a cursor cannot move
    the listing to another endpoint)."""
    target = urljoin(current_url, link)
    here, there = urlsplit(current_url), urlsplit(target)
    same_origin = (here.scheme, here.hostname, here.port) == (there.scheme, there.hostname, there.port)
    if not same_origin or here.path != there.path or there.username is not None or there.fragment:
        raise RegistryResponseError(f"Link to the next page leaves {here.path} of this registry: {link!r}")
    return target


def _json_object(body: bytes, what: str) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise RegistryResponseError(f"{what}: not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryResponseError(f"{what}: not a JSON object")
    return doc


def _string_list(doc: dict[str, object], key: str, what: str) -> list[str]:
    value = doc.get(key)
    if value is None:  # distribution sends `"tags": null` for a repository without tags
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryResponseError(f"{what}: {key!r} is not a list of strings")
    return list(value)


def parse_catalog(body: bytes) -> list[str]:
    """Repository names of one /v2/_catalog page; names that are not valid repository names are refused."""
    names = _string_list(_json_object(body, "catalog"), "repositories", "catalog")
    for name in names:
        try:
            validate_repository(name)
        except InvalidReference as exc:
            raise RegistryResponseError(f"catalog: {exc}") from None
    return names


def parse_tags(body: bytes, repository: str) -> list[str]:
    """Tags of one /v2/<name>/tags/list page."""
    what = f"tags of {repository}"
    doc = _json_object(body, what)
    name = doc.get("name")
    if name is not None and name != repository:
        raise RegistryResponseError(f"{what}: the answer names repository {name!r}")
    return _string_list(doc, "tags", what)


def group_tags(tag_digests: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Manifest digest -> its tags (sorted), digests in sorted order: one event per distinct manifest."""
    by_digest: dict[str, list[str]] = {}
    for tag, digest in tag_digests.items():
        by_digest.setdefault(digest, []).append(tag)
    return {digest: tuple(sorted(by_digest[digest])) for digest in sorted(by_digest)}


def distinct_in_order(names: Iterable[str]) -> list[str]:
    """`names` without repeats; a registry whose pagination overlaps pages must not yield a repository twice."""
    return list(dict.fromkeys(names))


def registry_endpoint(
    routes: list[Route], registry: str, explicit_url: str | None
) -> tuple[str, tuple[str, str] | None]:
    """Where to reach the proxy registry `registry` (events' host[:port]) and with which credentials.

    The URL: `explicit_url`, else the one `proxy_url` its routes name, else https://<registry>. Credentials: the
    `proxy_username`/`proxy_password` of its routes whose `proxy_url` is unset or is that URL (never those of
    a route naming another URL: a typo in --registry-url must not send them elsewhere). ValueError when the
    routes disagree."""
    mine = [r for r in routes if r.registry.lower() == registry.lower()]
    if explicit_url:
        url = explicit_url.rstrip("/")
    else:
        urls = sorted({r.proxy_url for r in mine if r.proxy_url})
        if len(urls) > 1:
            raise ValueError(f"invalid --registry-url: not given, and the routes of {registry} name {', '.join(urls)}")
        url = urls[0] if urls else f"https://{registry}"
    pairs = {
        (r.proxy_username, r.proxy_password.get_secret_value())
        for r in mine
        if r.proxy_username and r.proxy_password and (r.proxy_url is None or r.proxy_url == url)
    }
    if len(pairs) > 1:
        raise ValueError(f"the routes of {registry} name different proxy credentials for {url}")
    return url, (next(iter(pairs)) if pairs else None)

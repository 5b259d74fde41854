"""A registry's content through its /v2 API, for `layerfill backfill --source api` (registries whose storage
layerfill cannot read): repositories from /v2/_catalog, tags from /v2/<name>/tags/list (both paginated with `n`
and the Link header), each tag's manifest digest from a HEAD of /v2/<name>/manifests/<tag>.

Requests go through RegistryClient's transport chain (Basic or token auth, retries with backoff, the per-host
limit, redirects followed hop by hop without credentials). `RegistryApi.manifests` has the shape of the storage
catalog ops/enumerate.py walks, so both sources share its ordering and checkpoint semantics.

What CNCF distribution in proxy mode answers (v3.1.1, checked against the devstack proxy): _catalog lists the
repositories in its local storage; tags/list is answered by the upstream (every upstream tag, cached or not);
a HEAD of a tag resolves it upstream and stores that manifest and tag link locally (and sends a pull
notification). So against a distribution proxy this source covers every upstream tag of each cached repository,
not only what clients pulled; `--source storage` enumerates exactly what the cache holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from layerfill.oci.mediatypes import ACCEPT_MANIFESTS
from layerfill.ops.catalog import (
    PAGE_SIZE,
    RegistryResponseError,
    distinct_in_order,
    group_tags,
    next_link,
    parse_catalog,
    parse_tags,
    resolve_next,
)
from layerfill.remote.client import RegistryClient
from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import BodyInterrupted, InvalidInput, UpstreamError
from layerfill.remote.guard import check_digest, check_reference
from layerfill.remote.transport.base import discard, read_capped
from layerfill.remote.transport.redact import get_logger

log = get_logger(__name__)

MAX_PAGE_BYTES = 8 * 1024 * 1024
MAX_PAGES = 1_000_000  # a registry whose Link never ends (or loops) is stopped, not followed forever


class CatalogUnavailable(Exception):
    """The registry does not let us list its repositories (no _catalog, or not for these credentials)."""


class RegistryApi(RegistryClient):
    """RegistryClient plus the listing endpoints. A subclass so listing reuses the client's request path
    (`_send`, `_error`) rather than a second HTTP stack. Holds the tag -> digest map of the last repository
    asked for, since the enumeration asks for its revisions and its tags in turn."""

    def __init__(
        self, base_url: str, credentials: Credentials | None = None, *, page_size: int = PAGE_SIZE, **kwargs: Any
    ) -> None:
        # One request at a time: an enumeration is sequential, and a registry serving clients should not feel it.
        kwargs.setdefault("max_concurrency", 1)
        super().__init__(base_url, credentials, **kwargs)
        if not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"invalid page_size {page_size!r}: must be a positive integer")
        self.page_size = page_size
        self.skipped: list[str] = []  # "repository[:tag]: why" of what vanished between listing and resolving
        self._resolved: tuple[str, dict[str, str]] | None = None

    # -- the storage-catalog shape ops/enumerate.py walks -----------------------------------------------------

    def list_repositories(self) -> list[str]:
        """Every repository in the catalog. CatalogUnavailable when the registry refuses to list them."""
        url = f"{self.base_url}/v2/_catalog?{urlencode({'n': self.page_size})}"
        try:
            return distinct_in_order(self._pages(url, "catalog", parse_catalog))
        except UpstreamError as exc:
            if exc.status in (401, 403, 404):
                raise CatalogUnavailable(
                    f"{self.base_url} does not list its repositories (GET /v2/_catalog: {exc.message}, "
                    f"status {exc.status}); name them with --repository, or use --source storage"
                ) from None
            raise

    def list_tags(self, repository: str) -> dict[str, str]:
        """Tag -> manifest digest; tags that vanished before their HEAD are left out (and noted in `skipped`)."""
        if self._resolved is None or self._resolved[0] != repository:
            self._resolved = (repository, self._resolve_tags(repository))
        return dict(self._resolved[1])

    def list_manifest_revisions(self, repository: str) -> list[str]:
        return list(group_tags(self.list_tags(repository)))

    # -- requests ---------------------------------------------------------------------------------------------

    def tags(self, repository: str) -> list[str] | None:
        """Every tag of `repository`; None when the registry does not know it (404)."""
        name = self._name(repository)
        url = f"{self.base_url}/v2/{name}/tags/list?{urlencode({'n': self.page_size})}"
        try:
            return distinct_in_order(self._pages(url, f"tags of {name}", lambda body: parse_tags(body, name)))
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest `tag` points at (HEAD, Docker-Content-Digest; a GET when a registry does not send it
        on HEAD); None when the tag does not exist (404)."""
        name = self._name(repository)
        url = f"{self.base_url}/v2/{name}/manifests/{check_reference(tag, 'tag')}"
        response = self._send("HEAD", url, {"Accept": ACCEPT_MANIFESTS})
        if response.status_code == 404:
            discard(response)
            return None
        if response.status_code != 200:
            raise self._error(response, f"manifest {tag} of {name}")
        announced = response.headers.get("Docker-Content-Digest", "").strip()
        discard(response)
        if announced:
            try:
                return check_digest(announced, "Docker-Content-Digest")
            except InvalidInput as exc:
                raise RegistryResponseError(f"manifest {tag} of {name}: {exc}") from None
        return self.get_manifest(repository, tag).digest

    def _resolve_tags(self, repository: str) -> dict[str, str]:
        tags = self.tags(repository)
        if tags is None:
            self.skipped.append(f"{repository}: unknown to the registry (tags/list 404)")
            log.warning("skipping %s: the registry does not know it (tags/list answered 404)", repository)
            return {}
        resolved: dict[str, str] = {}
        for tag in tags:
            try:
                check_reference(tag, "tag")
            except InvalidInput:  # one odd tag must not stop the backfill, nor reach a URL
                self.skipped.append(f"{repository}: invalid tag {tag[:140]!r} listed")
                log.warning("skipping tag %r of %s: not a valid tag", tag[:140], repository)
                continue
            digest = self.manifest_digest(repository, tag)
            if digest is None:
                self.skipped.append(f"{repository}:{tag}: tag vanished (HEAD 404)")
                log.warning("skipping %s:%s: the tag vanished after it was listed", repository, tag)
                continue
            resolved[tag] = digest
        return resolved

    def _pages(self, url: str, what: str, parse: Callable[[bytes], list[str]]) -> list[str]:
        """Every entry of a paginated listing: follow `rel="next"` until there is none."""
        entries: list[str] = []
        seen: set[str] = set()
        current: str | None = url
        while current is not None:
            if current in seen or len(seen) >= MAX_PAGES:
                raise RegistryResponseError(f"{what}: pagination does not end (Link points back to {current})")
            seen.add(current)
            link, body = self._page(current, what)
            page = parse(body)
            entries.extend(page)
            target = next_link(link)
            # An empty page ends the listing even with a Link: following it could only loop.
            current = resolve_next(current, target) if target and page else None
        return entries

    def _page(self, url: str, what: str) -> tuple[str | None, bytes]:
        """One page's Link header and body; a body cut mid-read is asked for again, as get_manifest does."""
        attempt = 1
        while True:
            response = self._send("GET", url, {"Accept": "application/json"})
            if response.status_code != 200:
                raise self._error(response, what)
            link = response.headers.get("Link")
            try:
                return link, read_capped(response, MAX_PAGE_BYTES, lambda n: _too_large(what, n))
            except BodyInterrupted:
                if attempt >= self.retry.max_attempts:
                    raise
                self.retry.sleep(self.retry.backoff(attempt))
                attempt += 1


def _too_large(what: str, seen: int) -> RegistryResponseError:
    return RegistryResponseError(f"{what}: a page of more than {MAX_PAGE_BYTES} bytes ({seen} seen or declared)")

"""Client for one upstream registry's /v2 API: manifests, blobs, existence checks and ping.

Thread-safe: one client per upstream route is meant to be shared by all fetcher threads. Redirects are
followed here, hop by hop, rather than by requests: each hop is a fresh request through the transport
chain, whose auth layers add credentials only for the upstream's own origin, so a 307 to blob storage on
another host never carries the Authorization header (nor cookies: the session keeps none).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from http.cookiejar import DefaultCookiePolicy
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import requests
from requests import Response

from layerfill import __version__
from layerfill.oci.manifest import MAX_MANIFEST_BYTES
from layerfill.oci.mediatypes import ACCEPT_MANIFESTS, GENERIC_CONTENT_TYPES, base_type
from layerfill.remote.blob import CHUNK_SIZE, BlobStream
from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import (
    BodyInterrupted,
    DigestMismatch,
    InvalidInput,
    ManifestTooLarge,
    UpstreamError,
    error_for_status,
)
from layerfill.remote.guard import (
    check_base_url,
    check_digest,
    check_reference,
    check_repository,
    check_upstream_prefix,
)
from layerfill.remote.transport.base import Origin, content_length, discard, read_capped
from layerfill.remote.transport.chain import build_transport
from layerfill.remote.transport.limit import HostLimiter
from layerfill.remote.transport.metered import request_kind
from layerfill.remote.transport.redact import get_logger, install_log_scrubbing, redact_url
from layerfill.remote.transport.retry import RetryPolicy, retry_after_of
from layerfill.remote.transport.tokens import TokenCache

log = get_logger(__name__)

MAX_REDIRECTS = 5
# (connect, read) seconds; the read timeout applies per socket read, so long blob downloads are fine.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY_LIMIT = 64 * 1024

Timeout = float | tuple[float, float]


class Manifest(NamedTuple):
    content: bytes
    media_type: str
    digest: str


class ManifestHead(NamedTuple):
    digest: str
    size: int | None
    media_type: str


class RegistryClient:
    """Read-only client of one upstream registry.

    `credentials` are sent only to the upstream's origin and, for token auth, to a realm on the same host
    name or listed in `credential_hosts` (e.g. `["auth.docker.io"]` for Docker Hub). `upstream_prefix` is
    prepended to every repository (`library/` for Docker Hub official images).
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | tuple[str, str] | None = None,
        upstream_prefix: str = "",
        max_concurrency: int = 8,
        timeout: Timeout = DEFAULT_TIMEOUT,
        *,
        retry: RetryPolicy | None = None,
        credential_hosts: Iterable[str] = (),
        token_cache: TokenCache | None = None,
        limiter: HostLimiter | None = None,
        verify: bool | str = True,
        proxies: Mapping[str, str] | None = None,
        max_manifest_bytes: int = MAX_MANIFEST_BYTES,
        chunk_size: int = CHUNK_SIZE,
        user_agent: str = f"layerfill/{__version__}",
        metrics_route: str | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.upstream_prefix = check_upstream_prefix(upstream_prefix)
        if isinstance(credentials, tuple):
            credentials = Credentials(*credentials)
        if credentials is not None and not isinstance(credentials, Credentials):
            raise InvalidInput("credentials", type(credentials).__name__, "must be Credentials or (user, password)")
        self._credentials = credentials
        self.timeout = _check_timeout(timeout)
        for name, value in (("max_manifest_bytes", max_manifest_bytes), ("chunk_size", chunk_size)):
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(name, value, "must be a positive integer")
        self.max_manifest_bytes = max_manifest_bytes
        self.chunk_size = chunk_size
        self.retry = retry if retry is not None else RetryPolicy()
        try:
            self.limiter = limiter if limiter is not None else HostLimiter(max_concurrency)
        except ValueError as exc:
            raise InvalidInput("max_concurrency", max_concurrency, str(exc)) from None
        # Not `token_cache or ...`: an empty cache is falsy (it has __len__).
        self.token_cache = token_cache if token_cache is not None else TokenCache()
        self._origin = Origin.of(self.base_url)
        try:
            transport = build_transport(
                origin=self._origin,
                credentials=credentials,
                retry=self.retry,
                limiter=self.limiter,
                token_cache=self.token_cache,
                credential_hosts=credential_hosts,
                pool_maxsize=max(max_concurrency, 1),
                metrics_route=metrics_route,
            )
        except ValueError as exc:
            raise InvalidInput("credential_hosts", list(credential_hosts), str(exc)) from None
        self._session = _session(transport, verify=verify, proxies=proxies, user_agent=user_agent)
        install_log_scrubbing()

    # -- public API ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/ (authenticating if challenged); raises on anything but 200."""
        response = self._send("GET", f"{self.base_url}/v2/", {})
        if response.status_code != 200:
            raise self._error(response, "ping")
        discard(response)

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest bytes exactly as served, their media type and digest (verified when `reference`
        is a digest; for a tag, checked against Docker-Content-Digest when the upstream sends one)."""
        name = self._name(repository)
        reference = check_reference(reference)
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"
        attempt = 1
        while True:
            with request_kind("manifest"):
                response = self._send("GET", url, {"Accept": ACCEPT_MANIFESTS})
            if response.status_code != 200:
                raise self._error(response, f"manifest {reference} of {name}")
            try:
                content = read_capped(response, self.max_manifest_bytes, lambda seen: self._too_large(url, seen))
                break
            except BodyInterrupted:
                # A manifest is small and read whole, so the read can simply start again.
                if attempt >= self.retry.max_attempts:
                    raise
                self.retry.sleep(self.retry.backoff(attempt))
                attempt += 1
        digest = self._manifest_digest(response, reference, content, url)
        return Manifest(content, _manifest_media_type(response, content), digest)

    @contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[BlobStream]:
        """Stream a blob: `with client.open_blob(repo, d) as blob: for chunk in blob: ...`.

        `blob.size` is the Content-Length. Chunks are at most `chunk_size` bytes; the stream follows
        the registry's redirect to blob storage, resumes broken bodies with Range requests and raises
        DigestMismatch at the end if the bytes do not hash to `digest`.
        """
        name = self._name(repository)
        digest = check_digest(digest)
        url = f"{self.base_url}/v2/{name}/blobs/{digest}"
        stream = BlobStream(
            digest=digest,
            opener=lambda offset: self._open_blob_at(url, offset),
            retry=self.retry,
            chunk_size=self.chunk_size,
        )
        try:
            stream.open()
            yield stream
        finally:
            stream.close()

    def blob_exists(self, repository: str, digest: str) -> int | None:
        """The blob's size if the upstream has it (HEAD), None on 404."""
        name = self._name(repository)
        digest = check_digest(digest)
        url = f"{self.base_url}/v2/{name}/blobs/{digest}"
        with request_kind("blob"):
            response = self._send("HEAD", url, {})
        if response.status_code == 404:
            discard(response)
            return None
        if response.status_code != 200:
            raise self._error(response, f"blob {digest} of {name}")
        size = content_length(response)
        discard(response)
        if size is None:
            raise UpstreamError("HEAD on a blob answered without Content-Length", url=url, status=200)
        return size

    def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        """HEAD a manifest (a tag, usually): its digest, size and media type, or None on 404. One cheap request
        to learn whether a tag moved, without its body."""
        name = self._name(repository)
        reference = check_reference(reference)
        url = f"{self.base_url}/v2/{name}/manifests/{reference}"
        response = self._send("HEAD", url, {"Accept": ACCEPT_MANIFESTS})
        if response.status_code == 404:
            discard(response)
            return None
        if response.status_code != 200:
            raise self._error(response, f"manifest {reference} of {name}")
        digest = response.headers.get("Docker-Content-Digest", "").strip()
        size = content_length(response)
        media_type = base_type(response.headers.get("Content-Type"))
        discard(response)
        if not digest:
            raise UpstreamError("HEAD on a manifest answered without Docker-Content-Digest", url=url, status=200)
        return ManifestHead(check_digest(digest, "Docker-Content-Digest"), size, media_type)

    def get_referrers(self, repository: str, digest: str) -> Manifest | None:
        """The OCI referrers API answer for `digest` (an image index), or None where the registry does not serve
        the API (404, as CNCF distribution answers; clients then use the referrers tag schema)."""
        name = self._name(repository)
        digest = check_digest(digest)
        url = f"{self.base_url}/v2/{name}/referrers/{digest}"
        response = self._send("GET", url, {"Accept": "application/vnd.oci.image.index.v1+json"})
        if response.status_code in (404, 405):
            discard(response)
            return None
        if response.status_code != 200:
            raise self._error(response, f"referrers of {digest} in {name}")
        content = read_capped(response, self.max_manifest_bytes, lambda seen: self._too_large(url, seen))
        actual = f"sha256:{hashlib.sha256(content).hexdigest()}"
        return Manifest(content, _manifest_media_type(response, content), actual)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        user = self._credentials.username if self._credentials else None
        return (
            f"RegistryClient(base_url={redact_url(self.base_url)!r}, user={user!r}, "
            f"upstream_prefix={self.upstream_prefix!r})"
        )

    # -- internals ----------------------------------------------------------------------------------

    def _name(self, repository: str) -> str:
        return check_repository(self.upstream_prefix + check_repository(repository))

    def _send(self, method: str, url: str, headers: Mapping[str, str]) -> Response:
        """One logical request, following up to MAX_REDIRECTS redirects hop by hop."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._session.request(
                method, current, headers=dict(headers), stream=True, allow_redirects=False, timeout=self.timeout
            )
            if response.status_code not in _REDIRECT_STATUSES:
                return response
            location = response.headers.get("Location", "")
            discard(response)
            current = _redirect_target(current, location)
            log.debug("%s %s redirected to %s", method, redact_url(url), redact_url(current))
        raise UpstreamError(f"more than {MAX_REDIRECTS} redirects", url=url)

    def _open_blob_at(self, url: str, offset: int) -> Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with request_kind("blob"):
            response = self._send("GET", url, headers)
        if response.status_code == 200 or (offset and response.status_code == 206):
            return response
        raise self._error(response, f"blob {url.rsplit('/', 1)[-1]}")

    def _error(self, response: Response, what: str) -> UpstreamError:
        detail = what
        if response.request is not None and response.request.method != "HEAD":
            registry_error = _registry_error(response)
            if registry_error:
                detail = f"{what}: {registry_error}"
        retry_after = retry_after_of(response)
        discard(response)
        return error_for_status(response.status_code, url=response.url, detail=detail, retry_after=retry_after)

    def _too_large(self, url: str, seen: int) -> ManifestTooLarge:
        return ManifestTooLarge(
            f"manifest larger than {self.max_manifest_bytes} bytes ({seen} bytes seen or declared)",
            url=url,
            limit=self.max_manifest_bytes,
            size=seen,
        )

    @staticmethod
    def _manifest_digest(response: Response, reference: str, content: bytes, url: str) -> str:
        if ":" in reference:
            algorithm = reference.split(":", 1)[0]
            actual = f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
            if actual != reference:
                raise DigestMismatch(expected=reference, actual=actual, url=url)
            return actual
        actual = f"sha256:{hashlib.sha256(content).hexdigest()}"
        announced = response.headers.get("Docker-Content-Digest", "").strip()
        if announced.startswith("sha256:") and announced != actual:
            raise DigestMismatch(expected=announced, actual=actual, url=url)
        return actual


def _session(
    transport: requests.adapters.BaseAdapter,
    *,
    verify: bool | str,
    proxies: Mapping[str, str] | None,
    user_agent: str,
) -> requests.Session:
    session = requests.Session()
    # No .netrc credentials or proxy/CA variables picked up behind our back: pass proxies/verify explicitly.
    session.trust_env = False
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    # Bodies are stored exactly as served; asking for identity keeps proxies from compressing them.
    session.headers.update({"User-Agent": user_agent, "Accept-Encoding": "identity"})
    session.verify = verify
    session.proxies = dict(proxies or {})
    session.mount("http://", transport)
    session.mount("https://", transport)
    return session


def _redirect_target(current: str, location: str) -> str:
    if not location:
        raise UpstreamError("redirect without a Location header", url=current)
    target = urljoin(current, location.strip())
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError("redirect to a URL that is not http(s)", url=current)
    if parts.username is not None or parts.password is not None:
        raise UpstreamError("redirect to a URL with userinfo", url=current)
    if urlsplit(current).scheme == "https" and parts.scheme == "http":
        raise UpstreamError("redirect from https to plain http refused", url=current)
    return target


def _registry_error(response: Response) -> str:
    """`CODE: message` of the first entry of a registry error body, if it has one."""
    try:
        body = response.raw.read(_ERROR_BODY_LIMIT, decode_content=True) if response.raw is not None else b""
        errors = json.loads(body).get("errors") if body else None
    except Exception:  # an unreadable or non-JSON error body only costs us the detail
        return ""
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return ""
    code, message = errors[0].get("code", ""), errors[0].get("message", "")
    return f"{code}: {message}"[:200] if isinstance(code, str) and isinstance(message, str) else ""


def _manifest_media_type(response: Response, content: bytes) -> str:
    """Content-Type when specific; else the manifest's own mediaType field; else whatever was sent."""
    content_type = base_type(response.headers.get("Content-Type"))
    if content_type and content_type not in GENERIC_CONTENT_TYPES:
        return content_type
    try:
        declared = json.loads(content).get("mediaType")
    except Exception:  # not JSON or not an object: the planner will reject the bytes anyway
        declared = None
    return declared if isinstance(declared, str) and declared else content_type


def _check_timeout(timeout: object) -> Timeout:
    def positive(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and value > 0

    if positive(timeout):
        return float(timeout)  # type: ignore[arg-type]
    if isinstance(timeout, tuple) and len(timeout) == 2 and all(positive(v) for v in timeout):
        return (float(timeout[0]), float(timeout[1]))
    raise InvalidInput("timeout", timeout, "must be seconds > 0 or a (connect, read) pair of them")

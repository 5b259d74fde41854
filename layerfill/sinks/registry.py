"""Warm-through sink for caches whose storage is not ours to write (Quay, Harbor, Artifactory).

Each blob and child manifest is requested through the proxy registry's own /v2 API, so the registry
fetches and stores it itself; we stream the body, hash it and drop it. The upstream client does the HTTP
work (Basic or Bearer token auth with the proxy's credentials, redirects, resumed bodies, digest check).

Presence is always UNKNOWN: a proxy may answer a HEAD from its upstream without having stored anything,
so a HEAD proves nothing, and every store is a full GET ("fetched").
"""

from __future__ import annotations

from layerfill.oci.reference import Digest, validate_repository
from layerfill.remote.client import RegistryClient
from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import DigestMismatch, NotFound, UpstreamError
from layerfill.sinks.base import (
    BlobLocation,
    BlobSource,
    BlobSpec,
    Presence,
    Sink,
    SinkError,
    SinkIntegrityError,
    SinkUnavailable,
    StoreResult,
)
from layerfill.sinks.registry_auth import RegistryAuth


def sink_error(exc: UpstreamError, what: str) -> SinkError:
    """The sink error for an upstream-client error met while warming `what` through the proxy."""
    message = f"warming {what} through the proxy failed: {exc}"
    if isinstance(exc, DigestMismatch):
        return SinkIntegrityError(message)
    if exc.transient:
        return SinkUnavailable(message)
    return SinkError(message)


class RegistrySink(Sink):
    name = "registry"

    def __init__(
        self,
        proxy_url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        max_concurrency: int = 8,
        client: RegistryClient | None = None,
        auth: RegistryAuth | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("proxy_username and proxy_password must be given together")
        self.proxy_url = proxy_url
        credentials = (username, password) if username is not None and password is not None else None
        self._reader_credentials = Credentials(*credentials) if credentials else None
        self._auth = auth or (RegistryAuth() if credentials else None)
        self._client = client or RegistryClient(proxy_url, credentials, max_concurrency=max_concurrency)

    def __repr__(self) -> str:
        return f"RegistrySink({self._client!r})"

    def blob_presence(self, repository: str, digest: str) -> Presence:
        return Presence.UNKNOWN

    def manifest_presence(self, repository: str, digest: str) -> Presence:
        return Presence.UNKNOWN

    def store_blob(self, repository: str, blob: BlobSpec, source: BlobSource) -> StoreResult:
        """GET the blob through the proxy and discard it; `source` is never opened."""
        validate_repository(repository)
        what = f"blob {blob.digest} of {repository}"
        received = 0
        try:
            with self._client.open_blob(repository, blob.digest) as stream:
                if stream.size is not None and stream.size != blob.size:
                    raise SinkIntegrityError(f"{what}: proxy announces {stream.size} bytes, expected {blob.size}")
                for chunk in stream:
                    received += len(chunk)
                    if received > blob.size:
                        raise SinkIntegrityError(f"{what}: more than the expected {blob.size} bytes")
        except UpstreamError as exc:
            raise sink_error(exc, what) from exc
        if received != blob.size:
            raise SinkIntegrityError(f"{what}: got {received} bytes, expected {blob.size}")
        return StoreResult("fetched", received)

    def store_manifest(self, repository: str, digest: str, media_type: str, data: bytes) -> StoreResult:
        """GET the manifest by digest through the proxy (Accept: every manifest type), verified."""
        validate_repository(repository)
        d = str(Digest.parse(digest))
        what = f"manifest {d} of {repository}"
        try:
            manifest = self._client.get_manifest(repository, d)
        except UpstreamError as exc:
            raise sink_error(exc, what) from exc
        return StoreResult("fetched", len(manifest.content))

    def store_tag(self, repository: str, tag: str, digest: str) -> StoreResult:
        """GET the manifest by tag through the proxy: the proxy then records the tag itself (distribution writes
        its tag link on a pull by tag). The answer must be `digest`; a tag that moved in between is transient."""
        validate_repository(repository)
        d = str(Digest.parse(digest))
        what = f"tag {tag} of {repository}"
        try:
            manifest = self._client.get_manifest(repository, tag)
        except UpstreamError as exc:
            raise sink_error(exc, what) from exc
        if manifest.digest != d:
            raise SinkUnavailable(f"{what}: the proxy serves {manifest.digest}, expected {d} (tag moved?)")
        return StoreResult("fetched", len(manifest.content))

    def read_manifest(self, repository: str, digest: str) -> bytes | None:
        """GET by digest through the proxy, which serves a manifest it holds from its own storage (the pulled
        manifest always: it has just served it). None on 404."""
        validate_repository(repository)
        d = str(Digest.parse(digest))
        try:
            return self._client.get_manifest(repository, d).content
        except NotFound:
            return None
        except UpstreamError as exc:
            raise sink_error(exc, f"manifest {d} of {repository}") from exc

    def blob_location(self, repository: str, digest: str) -> BlobLocation:
        """The proxy's own `/v2/<repository>/blobs/<digest>`, with an Authorization header when the proxy needs
        credentials: Basic, or a bearer token from its realm when it challenges with Bearer (registry_auth.py)."""
        url = f"{self.proxy_url}/v2/{validate_repository(repository)}/blobs/{Digest.parse(digest, 'layer digest')}"
        if self._reader_credentials is None or self._auth is None:
            return BlobLocation(url)
        header = self._auth.header(self.proxy_url, repository, self._reader_credentials)
        return BlobLocation(url, {"Authorization": [header]})

    def close(self) -> None:
        self._client.close()

"""Where Clair can fetch a layer of a completed image, per the route's sink:

- `distribution`: a presigned S3 GET URL of the blob's data object (layerfill wrote it, or the registry did);
  Clair needs no credentials, and the URL expires after `scanner.presign_expiry_s`.
- `registry`: the proxy registry's own `/v2/<repository>/blobs/<digest>`, with an Authorization header when
  the route has proxy credentials: Basic, or a bearer token from the registry's realm when it challenges with
  Bearer (Quay: registry_auth.py).

Presigning is computed locally (no request to S3). Routes are the same as the fetcher's: an event no route
matches raises NoRoute."""

from __future__ import annotations

import threading
from datetime import timedelta

from minio import Minio

from layerfill.config.routes import Route, find_route
from layerfill.config.settings import S3Settings, Settings
from layerfill.oci.reference import validate_digest, validate_repository
from layerfill.remote.credentials import Credentials
from layerfill.sinks.layout import blob_data_key
from layerfill.sinks.s3client import make_minio

from .registry_auth import RegistryAuth
from .request import LayerSource


class LayerLocator:
    def __init__(self, settings: Settings, auth: RegistryAuth | None = None) -> None:
        self.auth = auth or RegistryAuth()
        self.routes = settings.routes
        self.s3 = settings.s3
        scanner = settings.scanner
        if scanner.presign_endpoint:
            self.s3 = settings.s3.model_copy(update={"endpoint": scanner.presign_endpoint})
        self.expiry = timedelta(seconds=scanner.presign_expiry_s)
        self._minio: Minio | None = None
        self._lock = threading.Lock()

    def route(self, registry: str, repository: str) -> Route:
        return find_route(self.routes, registry, repository)

    def locate(self, route: Route, repository: str, digest: str) -> LayerSource:
        digest = validate_digest(digest, "layer digest")
        if route.sink == "distribution":
            return LayerSource(self._presign(self.s3, digest))
        if route.sink == "registry":
            if not route.proxy_url:
                raise ValueError(f"route for {route.registry!r} uses sink 'registry' but sets no proxy_url")
            url = f"{route.proxy_url}/v2/{validate_repository(repository)}/blobs/{digest}"
            if route.proxy_username and route.proxy_password:
                creds = Credentials(route.proxy_username, route.proxy_password.get_secret_value())
                return LayerSource(url, {"Authorization": [self.auth.header(route.proxy_url, repository, creds)]})
            return LayerSource(url)
        raise ValueError(f"route for {route.registry!r} names unknown sink {route.sink!r}")

    def _presign(self, s3: S3Settings, digest: str) -> str:
        with self._lock:
            if self._minio is None:
                self._minio = make_minio(s3)
            client = self._minio
        return client.presigned_get_object(s3.bucket, blob_data_key(s3.root_directory, digest), expires=self.expiry)

"""Where Clair can fetch a layer of a completed image: the route's sink says (`Sink.blob_location`), whatever its
type: a presigned S3 GET URL of the blob's data for the distribution sink (Clair needs no credentials; the URL
expires after `scanner.presign_expiry_s` and names `scanner.presign_endpoint` when set), the proxy registry's own
blob URL with its Authorization header for the registry sink.

Presigning is computed locally (no request to S3). Routes are the same as the fetcher's: an event no route
matches raises NoRoute."""

from __future__ import annotations

from layerfill.config.routes import Route, find_route
from layerfill.config.settings import Settings
from layerfill.oci.reference import validate_digest
from layerfill.sinks.factory import SinkFactory
from layerfill.sinks.registry_auth import RegistryAuth

from .request import LayerSource


class LayerLocator:
    def __init__(self, settings: Settings, auth: RegistryAuth | None = None) -> None:
        self.routes = settings.routes
        self.s3 = settings.s3
        scanner = settings.scanner
        self.sinks = SinkFactory(
            presign_endpoint=scanner.presign_endpoint,
            presign_expiry_s=scanner.presign_expiry_s,
            registry_auth=auth or RegistryAuth(),
        )

    def route(self, registry: str, repository: str) -> Route:
        return find_route(self.routes, registry, repository)

    def locate(self, route: Route, repository: str, digest: str) -> LayerSource:
        digest = validate_digest(digest, "layer digest")
        where = self.sinks.make(route, self.s3).blob_location(repository, digest)
        return LayerSource(where.url, where.headers)

    def close(self) -> None:
        self.sinks.close()

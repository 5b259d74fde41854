"""Layer URLs for Clair, per sink (presigning is local: no S3 needed)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from layerfill.config.routes import NoRoute, Route
from layerfill.config.settings import S3Settings, ScannerSettings, Settings
from layerfill.consumers.scanner.layers import LayerLocator
from layerfill.oci.reference import InvalidReference

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
PROXY = "cache.example:5000"


def settings(**scanner: object) -> Settings:
    return Settings(
        s3=S3Settings(
            endpoint="http://127.0.0.1:19000",
            access_key="ak",
            secret_key=SecretStr("sk"),
            bucket="registry",
            root_directory="/proxy",
        ),
        scanner=ScannerSettings(**scanner),
        routes=[
            Route(registry=PROXY, upstream_url="https://up.example", sink="distribution"),
            Route(
                registry=PROXY,
                repository_prefix="warm",
                upstream_url="https://up.example",
                sink="registry",
                proxy_url="https://cache.example:5000",
            ),
            Route(
                registry=PROXY,
                repository_prefix="private",
                upstream_url="https://up.example",
                sink="registry",
                proxy_url="https://cache.example:5000",
                proxy_username="robot",
                proxy_password=SecretStr("pw"),
            ),
        ],
    )


def test_distribution_sink_gets_a_presigned_url_of_the_blob_data() -> None:
    loc = LayerLocator(settings(presign_expiry_s=600))
    src = loc.locate(loc.route(PROXY, "library/debian"), "library/debian", DIGEST)
    url = urlsplit(src.uri)
    query = parse_qs(url.query)
    assert (url.scheme, url.netloc) == ("http", "127.0.0.1:19000")
    assert url.path == f"/registry/proxy/docker/registry/v2/blobs/sha256/ab/{DIGEST[7:]}/data"
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Signature"][0]
    assert query["X-Amz-Credential"][0].startswith("ak/")
    assert src.headers == {}


def test_presign_endpoint_is_the_host_clair_reaches() -> None:
    loc = LayerLocator(settings(presign_endpoint="https://s3.internal:9443"))
    src = loc.locate(loc.route(PROXY, "x"), "x", DIGEST)
    assert urlsplit(src.uri).netloc == "s3.internal:9443" and src.uri.startswith("https://")


def test_registry_sink_gets_the_proxys_blob_url() -> None:
    loc = LayerLocator(settings())
    src = loc.locate(loc.route(PROXY, "warm/app"), "warm/app", DIGEST)
    assert src.uri == f"https://cache.example:5000/v2/warm/app/blobs/{DIGEST}"
    assert src.headers == {}


def test_registry_sink_with_proxy_credentials_sends_basic_auth() -> None:
    loc = LayerLocator(settings())
    src = loc.locate(loc.route(PROXY, "private/app"), "private/app", DIGEST)
    assert src.uri == f"https://cache.example:5000/v2/private/app/blobs/{DIGEST}"
    assert src.headers == {"Authorization": ["Basic cm9ib3Q6cHc="]}  # robot:pw


def test_no_route_and_bad_names_are_refused() -> None:
    loc = LayerLocator(settings())
    with pytest.raises(NoRoute):
        loc.route("other.example", "x")
    with pytest.raises(InvalidReference, match="layer digest"):
        loc.locate(loc.route(PROXY, "x"), "x", "sha256:zz")
    with pytest.raises(InvalidReference):
        loc.locate(loc.route(PROXY, "warm/x"), "warm/../x", DIGEST)

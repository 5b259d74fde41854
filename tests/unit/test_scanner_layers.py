"""Layer URLs for Clair, per sink (presigning is local: no S3 needed)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from layerfill.config.routes import NoRoute, Route
from layerfill.config.settings import S3Settings, ScannerSettings, Settings
from layerfill.consumers.scanner.layers import LayerLocator
from layerfill.oci.reference import InvalidReference
from layerfill.sinks.registry_auth import RegistryAuth

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


class _Resp:
    def __init__(self, status: int, headers: dict[str, str] | None = None, content: bytes = b"") -> None:
        self.status_code, self.headers, self.content = status, headers or {}, content


class _Registry:
    """A proxy registry's /v2/ challenge and token realm, answering what a session.get would."""

    def __init__(self, challenge: str) -> None:
        self.challenge = challenge
        self.token_requests: list[dict] = []

    def get(self, url: str, params: dict | None = None, headers: dict | None = None, timeout: float = 0) -> _Resp:
        if url.endswith("/v2/"):
            return _Resp(401, {"WWW-Authenticate": self.challenge})
        self.token_requests.append({"url": url, "params": params, "auth": (headers or {}).get("Authorization")})
        return _Resp(200, content=b'{"token": "tok-%d", "expires_in": 3600}' % len(self.token_requests))


def test_registry_sink_with_proxy_credentials_sends_basic_auth() -> None:
    loc = LayerLocator(settings(), RegistryAuth(_Registry('Basic realm="registry"')))  # type: ignore[arg-type]
    src = loc.locate(loc.route(PROXY, "private/app"), "private/app", DIGEST)
    assert src.uri == f"https://cache.example:5000/v2/private/app/blobs/{DIGEST}"
    assert src.headers == {"Authorization": ["Basic cm9ib3Q6cHc="]}  # robot:pw


def test_registry_sink_behind_bearer_auth_gets_a_repository_token_refreshed_at_half_life() -> None:
    now = [0.0]
    registry = _Registry('Bearer realm="https://cache.example:5000/v2/auth",service="cache.example:5000"')
    loc = LayerLocator(settings(), RegistryAuth(registry, clock=lambda: now[0]))  # type: ignore[arg-type]
    route = loc.route(PROXY, "private/app")
    assert loc.locate(route, "private/app", DIGEST).headers == {"Authorization": ["Bearer tok-1"]}
    (req,) = registry.token_requests
    assert req["params"] == {"scope": "repository:private/app:pull", "service": "cache.example:5000"}
    assert req["auth"] == "Basic cm9ib3Q6cHc="
    now[0] = 1000.0
    assert loc.locate(route, "private/app", DIGEST).headers == {"Authorization": ["Bearer tok-1"]}
    now[0] = 1900.0
    assert loc.locate(route, "private/app", DIGEST).headers == {"Authorization": ["Bearer tok-2"]}


def test_credentials_never_go_to_a_realm_on_another_host() -> None:
    registry = _Registry('Bearer realm="https://evil.example/token"')
    loc = LayerLocator(settings(), RegistryAuth(registry))  # type: ignore[arg-type]
    src = loc.locate(loc.route(PROXY, "private/app"), "private/app", DIGEST)
    assert registry.token_requests == []
    assert src.headers == {"Authorization": ["Basic cm9ib3Q6cHc="]}


def test_no_route_and_bad_names_are_refused() -> None:
    loc = LayerLocator(settings())
    with pytest.raises(NoRoute):
        loc.route("other.example", "x")
    with pytest.raises(InvalidReference, match="layer digest"):
        loc.locate(loc.route(PROXY, "x"), "x", "sha256:zz")
    with pytest.raises(InvalidReference):
        loc.locate(loc.route(PROXY, "warm/x"), "warm/../x", DIGEST)

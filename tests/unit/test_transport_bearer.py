import json
import threading

import pytest
import requests

from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import Unauthorized, UpstreamError
from layerfill.remote.transport.base import Origin
from layerfill.remote.transport.bearer import BearerTransport, normalize_credential_hosts, parse_token_response
from layerfill.remote.transport.http import HttpTransport
from layerfill.remote.transport.retry import RetryTransport
from layerfill.remote.transport.tokens import TokenCache
from tests.unit.registry_fake import FakeRegistry, Fault, fast_retry

pytestmark = pytest.mark.unit

PATH = "/v2/team/app/manifests/v1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bearer(
    registry: FakeRegistry,
    *,
    with_credentials: bool = False,
    credential_hosts: tuple[str, ...] = (),
    cache: TokenCache | None = None,
) -> BearerTransport:
    plain = RetryTransport(HttpTransport(), fast_retry())  # type: ignore[arg-type]
    return BearerTransport(
        plain,
        origin=Origin.of(registry.url),
        token_transport=plain,
        cache=cache if cache is not None else TokenCache(),
        credentials=Credentials(registry.username, registry.password) if with_credentials else None,
        credential_hosts=credential_hosts,
    )


def get(transport: BearerTransport, url: str) -> int:
    response = transport.send(requests.Request("GET", url).prepare(), stream=False, timeout=5)
    response.close()
    return response.status_code


def make(**kwargs: object) -> FakeRegistry:
    registry = FakeRegistry(auth="bearer", **kwargs)  # type: ignore[arg-type]
    registry.add_manifest("team/app", b'{"schemaVersion":2}', tag="v1")
    return registry


def test_anonymous_token_flow_then_cached_token_up_front() -> None:
    with make() as registry:
        transport = bearer(registry)
        assert get(transport, registry.url + PATH) == 200
        assert get(transport, registry.url + PATH) == 200
        tokens = registry.requests_to("/token")
        assert len(tokens) == 1
        assert "Authorization" not in tokens[0].headers
        assert "service=fake-registry" in tokens[0].path
        assert "scope=repository%3Ateam%2Fapp%3Apull" in tokens[0].path
        auth = [s.headers.get("Authorization") for s in registry.requests_to(PATH)]
        assert auth[0] is None and auth[1].startswith("Bearer ") and auth[2] == auth[1]


def test_credentials_go_to_a_realm_on_the_same_host() -> None:
    with make(token_requires_credentials=True) as registry:
        assert get(bearer(registry, with_credentials=True), registry.url + PATH) == 200
        [token_request] = registry.requests_to("/token")
        assert registry.basic_ok(token_request.headers.get("Authorization"))


def test_credentials_withheld_from_a_realm_on_another_host() -> None:
    with make(realm_host="localhost", token_requires_credentials=True) as registry:
        with pytest.raises(Unauthorized, match="withheld"):
            get(bearer(registry, with_credentials=True), registry.url + PATH)
        [token_request] = registry.requests_to("/token")
        assert token_request.host.startswith("localhost")
        assert "Authorization" not in token_request.headers


def test_route_may_allow_credentials_for_another_realm_host() -> None:
    with make(realm_host="localhost", token_requires_credentials=True) as registry:
        transport = bearer(registry, with_credentials=True, credential_hosts=("LocalHost",))
        assert get(transport, registry.url + PATH) == 200
        assert registry.basic_ok(registry.requests_to("/token")[0].headers.get("Authorization"))


def test_access_token_field_is_accepted() -> None:
    with make(token_field="access_token") as registry:
        assert get(bearer(registry), registry.url + PATH) == 200


def test_expired_token_is_fetched_again() -> None:
    clock = Clock()
    with make(expires_in=100) as registry:
        transport = bearer(registry, cache=TokenCache(clock=clock))
        assert get(transport, registry.url + PATH) == 200
        clock.now = 80
        assert get(transport, registry.url + PATH) == 200
        assert len(registry.requests_to("/token")) == 1
        clock.now = 95  # past expires_in minus the early-refresh margin
        assert get(transport, registry.url + PATH) == 200
        assert len(registry.requests_to("/token")) == 2


def test_revoked_token_is_replaced_once() -> None:
    with make() as registry:
        transport = bearer(registry)
        assert get(transport, registry.url + PATH) == 200
        registry.tokens.clear()
        assert get(transport, registry.url + PATH) == 200
        assert len(registry.requests_to("/token")) == 2


def test_token_is_fetched_once_for_many_threads() -> None:
    with make() as registry:
        registry.delay = 0.02
        transport = bearer(registry)
        statuses: list[int] = []
        threads = [
            threading.Thread(target=lambda: statuses.append(get(transport, registry.url + PATH))) for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert statuses == [200] * 6
        assert len(registry.requests_to("/token")) == 1


def test_token_realm_failures_are_retried() -> None:
    with make() as registry:
        registry.script("/token", Fault(status=503), Fault(status=502))
        assert get(bearer(registry), registry.url + PATH) == 200
        assert len(registry.requests_to("/token")) == 3


def test_token_realm_refusal_without_credentials() -> None:
    with make(token_requires_credentials=True) as registry, pytest.raises(Unauthorized, match="no credentials"):
        get(bearer(registry), registry.url + PATH)


@pytest.mark.parametrize("realm", ["ftp://127.0.0.1/token", "/token", "http://user:pw@127.0.0.1/token"])
def test_realm_must_be_a_plain_http_url(realm: str) -> None:
    with make() as registry:
        registry.realm_url = realm
        with pytest.raises(UpstreamError) as info:
            get(bearer(registry), registry.url + PATH)
        assert info.value.transient is False
        assert "pw" not in str(info.value)


def test_tokens_never_go_to_another_origin() -> None:
    with make() as registry:
        transport = bearer(registry)
        assert get(transport, registry.url + PATH) == 200
        assert get(transport, f"http://localhost:{registry.port}{PATH}") == 401
        other = [s for s in registry.requests_to(PATH) if s.host.startswith("localhost")]
        assert "Authorization" not in other[0].headers


def test_no_credentials_over_plain_http_realm_of_an_https_upstream() -> None:
    plain = HttpTransport()
    transport = BearerTransport(
        plain,
        origin=Origin.of("https://registry.example"),
        token_transport=plain,
        cache=TokenCache(),
        credentials=Credentials("u", "password1"),
    )
    assert transport._may_send_credentials("https://registry.example:5001/token")
    assert not transport._may_send_credentials("http://registry.example/token")
    assert not transport._may_send_credentials("https://evil.example/token")


@pytest.mark.parametrize(
    ("body", "token", "expires_in"),
    [
        ({"token": "t", "expires_in": 300}, "t", 300.0),
        ({"access_token": "a"}, "a", 60.0),
        ({"token": "t", "access_token": "a", "expires_in": "soon"}, "t", 60.0),
        ({"token": "t", "expires_in": -5}, "t", 60.0),
    ],
)
def test_parse_token_response(body: dict[str, object], token: str, expires_in: float) -> None:
    parsed = parse_token_response(json.dumps(body).encode(), "https://r/token")
    assert (parsed.value, parsed.expires_in) == (token, expires_in)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"token": ""}', b'{"token": 5}', b"{}"])
def test_bad_token_responses(body: bytes) -> None:
    with pytest.raises(UpstreamError, match="token"):
        parse_token_response(body, "https://r/token")


@pytest.mark.parametrize("host", ["auth.docker.io:443", "https://auth.docker.io", "", "a b"])
def test_credential_hosts_are_bare_host_names(host: str) -> None:
    with pytest.raises(ValueError, match="credential_hosts"):
        normalize_credential_hosts([host])

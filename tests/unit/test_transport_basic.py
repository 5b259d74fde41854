import pytest
import requests

from layerfill.remote.credentials import Credentials
from layerfill.remote.transport.base import Origin
from layerfill.remote.transport.basic import BasicTransport
from layerfill.remote.transport.http import HttpTransport
from layerfill.remote.transport.retry import RetryTransport
from tests.unit.registry_fake import FakeRegistry, fast_retry

pytestmark = pytest.mark.unit


def basic(registry: FakeRegistry, password: str | None = None) -> BasicTransport:
    credentials = Credentials(registry.username, password or registry.password)
    return BasicTransport(RetryTransport(HttpTransport(), fast_retry()), Origin.of(registry.url), credentials)  # type: ignore[arg-type]


def get(transport: BasicTransport, url: str, headers: dict[str, str] | None = None) -> requests.Response:
    response = transport.send(requests.Request("GET", url, headers=headers).prepare(), stream=False, timeout=5)
    response.close()
    return response


@pytest.fixture
def registry() -> FakeRegistry:
    with FakeRegistry(auth="basic") as reg:
        yield reg


def test_answers_a_basic_challenge_then_sends_credentials_up_front(registry: FakeRegistry) -> None:
    transport = basic(registry)
    assert get(transport, registry.url + "/v2/").status_code == 200
    assert get(transport, registry.url + "/v2/").status_code == 200
    auth = [s.headers.get("Authorization") for s in registry.requests_to("/v2/")]
    assert auth[0] is None
    assert registry.basic_ok(auth[1]) and registry.basic_ok(auth[2])
    assert len(auth) == 3


def test_wrong_password_gives_back_the_401(registry: FakeRegistry) -> None:
    assert get(basic(registry, "nope-wrong"), registry.url + "/v2/").status_code == 401


def test_never_sends_credentials_to_another_origin(registry: FakeRegistry) -> None:
    transport = basic(registry)
    get(transport, registry.url + "/v2/")  # learn that the upstream wants Basic
    assert get(transport, f"http://localhost:{registry.port}/v2/").status_code == 401
    other = [s for s in registry.requests_to("/v2/") if s.host.startswith("localhost")]
    assert len(other) == 1 and "Authorization" not in other[0].headers


def test_leaves_an_existing_authorization_alone(registry: FakeRegistry) -> None:
    assert get(basic(registry), registry.url + "/v2/", {"Authorization": "Bearer x"}).status_code == 401
    assert [s.headers["Authorization"] for s in registry.requests_to("/v2/")] == ["Bearer x"]


def test_ignores_bearer_challenges() -> None:
    with FakeRegistry(auth="bearer") as registry:
        assert get(basic(registry), registry.url + "/v2/").status_code == 401
        assert len(registry.requests_to("/v2/")) == 1
        assert registry.requests_to("/token") == []

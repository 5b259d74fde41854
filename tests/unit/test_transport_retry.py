import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from layerfill.remote.errors import UpstreamError
from layerfill.remote.transport.http import HttpTransport
from layerfill.remote.transport.limit import HostLimiter, LimitTransport
from layerfill.remote.transport.retry import RetryPolicy, RetryTransport, parse_retry_after
from tests.unit.registry_fake import FakeRegistry, Fault, fast_retry

pytestmark = pytest.mark.unit


def chain(policy: object) -> RetryTransport:
    return RetryTransport(LimitTransport(HttpTransport(), HostLimiter(4)), policy)  # type: ignore[arg-type]


def get(transport: RetryTransport, url: str, method: str = "GET") -> requests.Response:
    return transport.send(requests.Request(method, url).prepare(), stream=True, timeout=5)


@pytest.fixture
def registry() -> FakeRegistry:
    with FakeRegistry() as reg:
        reg.add_manifest("app", b"{}", tag="v1")
        yield reg


PATH = "/v2/app/manifests/v1"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_transient_status_then_success(registry: FakeRegistry, status: int) -> None:
    registry.script(PATH, Fault(status=status), Fault(status=status))
    sleeps: list[float] = []
    response = get(chain(fast_retry(sleeps=sleeps)), registry.url + PATH)
    assert response.status_code == 200
    assert len(registry.requests_to(PATH)) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_non_transient_status_is_not_retried(registry: FakeRegistry, status: int) -> None:
    registry.script(PATH, Fault(status=status))
    response = get(chain(fast_retry()), registry.url + PATH)
    assert response.status_code == status
    assert len(registry.requests_to(PATH)) == 1


def test_gives_back_last_response_when_attempts_run_out(registry: FakeRegistry) -> None:
    registry.script(PATH, *[Fault(status=503) for _ in range(5)])
    response = get(chain(fast_retry(max_attempts=3)), registry.url + PATH)
    assert response.status_code == 503
    assert len(registry.requests_to(PATH)) == 3


def test_retry_after_seconds_replaces_backoff(registry: FakeRegistry) -> None:
    registry.script(PATH, Fault(status=429, headers={"Retry-After": "2"}))
    sleeps: list[float] = []
    assert get(chain(fast_retry(sleeps=sleeps)), registry.url + PATH).status_code == 200
    assert sleeps == [2.0]


def test_retry_after_http_date_on_503(registry: FakeRegistry) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    registry.script(PATH, Fault(status=503, headers={"Retry-After": when}))
    sleeps: list[float] = []
    assert get(chain(fast_retry(sleeps=sleeps)), registry.url + PATH).status_code == 200
    assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 5.0


def test_retry_after_longer_than_cap_stops_at_once(registry: FakeRegistry) -> None:
    registry.script(PATH, Fault(status=429, headers={"Retry-After": "3600"}))
    sleeps: list[float] = []
    response = get(chain(fast_retry(sleeps=sleeps, retry_after_max=30)), registry.url + PATH)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3600"
    assert sleeps == []


def test_backoff_is_full_jitter_within_exponential_window(registry: FakeRegistry) -> None:
    registry.script(PATH, *[Fault(status=500) for _ in range(5)])
    sleeps: list[float] = []
    policy = fast_retry(max_attempts=6, sleeps=sleeps, backoff_base=0.1, backoff_max=0.3)
    assert get(chain(policy), registry.url + PATH).status_code == 200
    windows = [0.1, 0.2, 0.3, 0.3, 0.3]
    assert len(sleeps) == 5
    assert all(0 <= s <= w for s, w in zip(sleeps, windows, strict=True))


def test_connection_refused_is_retried_then_typed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    sleeps: list[float] = []
    with pytest.raises(UpstreamError) as info:
        get(chain(fast_retry(max_attempts=3, sleeps=sleeps)), f"http://127.0.0.1:{port}/v2/?X-Amz-Signature=sig")
    assert info.value.transient is True
    assert "connection refused" in str(info.value).lower()
    assert "sig" not in str(info.value)
    assert len(sleeps) == 2


def test_only_get_and_head_are_replayed(registry: FakeRegistry) -> None:
    registry.script("/v2/", Fault(status=503))
    request = requests.Request("POST", registry.url + "/v2/", data=b"x").prepare()
    response = chain(fast_retry()).send(request, stream=True, timeout=5)
    assert response.status_code == 503
    assert len(registry.requests_to("/v2/")) == 1


def test_discarded_responses_give_their_slot_back(registry: FakeRegistry) -> None:
    limiter = HostLimiter(1)
    transport = RetryTransport(LimitTransport(HttpTransport(), limiter), fast_retry())
    registry.script(PATH, Fault(status=503), Fault(status=503))
    response = get(transport, registry.url + PATH)  # would deadlock if a retried 503 kept the only slot
    assert response.status_code == 200
    response.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), ("120", 120.0), (" 7 ", 7.0), ("-1", None), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0
    assert parse_retry_after("Tue, 01 Jan 2030 00:01:00 GMT", now=now) == 60.0


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"backoff_base": -1}, {"retry_after_max": "x"}, {"backoff_max": -0.5}]
)
def test_policy_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]

import gc
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from layerfill.remote.errors import UpstreamError
from layerfill.remote.transport.base import Origin
from layerfill.remote.transport.http import HttpTransport
from layerfill.remote.transport.limit import HostLimiter, LimitTransport
from tests.unit.registry_fake import FakeRegistry

pytestmark = pytest.mark.unit


def send(transport: LimitTransport, url: str, stream: bool = True) -> requests.Response:
    return transport.send(requests.Request("GET", url).prepare(), stream=stream, timeout=5)


@pytest.fixture
def registry() -> FakeRegistry:
    with FakeRegistry() as reg:
        reg.add_blob("app", b"z" * 1000)
        yield reg


def test_never_more_requests_in_flight_than_the_limit(registry: FakeRegistry) -> None:
    registry.delay = 0.05
    transport = LimitTransport(HttpTransport(pool_maxsize=8), HostLimiter(2))

    def one(_: int) -> int:
        return send(transport, registry.url + "/v2/", stream=False).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8
    assert registry.max_in_flight == 2


def test_streamed_response_holds_its_slot_until_closed(registry: FakeRegistry) -> None:
    transport = LimitTransport(HttpTransport(), HostLimiter(1))
    first = send(transport, registry.url + "/v2/")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (send(transport, registry.url + "/v2/").close(), done.set()))
    thread.start()
    assert not done.wait(0.2), "second request ran while the first response was still open"
    first.close()
    assert done.wait(5)
    thread.join()


def test_other_hosts_have_their_own_slots(registry: FakeRegistry) -> None:
    transport = LimitTransport(HttpTransport(), HostLimiter(1))
    held = send(transport, registry.url + "/v2/")
    statuses: list[int] = []
    thread = threading.Thread(
        target=lambda: statuses.append(
            send(transport, f"http://localhost:{registry.port}/v2/", stream=False).status_code
        )
    )
    thread.start()
    thread.join(2)  # blocks forever if both hosts shared one slot
    held.close()
    thread.join(5)
    assert statuses == [200]
    assert not thread.is_alive()


def test_limiter_is_shared_by_transports_and_threads(registry: FakeRegistry) -> None:
    limiter = HostLimiter(1)
    first = send(LimitTransport(HttpTransport(), limiter), registry.url + "/v2/")
    semaphore = limiter.semaphore(Origin.of(registry.url))
    assert not semaphore.acquire(blocking=False)
    first.close()
    assert semaphore.acquire(blocking=False)
    semaphore.release()


def test_failed_send_releases_its_slot() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limiter = HostLimiter(1)
    transport = LimitTransport(HttpTransport(), limiter)
    for _ in range(2):  # the second attempt would hang if the first had kept the slot
        with pytest.raises(UpstreamError):
            send(transport, f"http://127.0.0.1:{port}/v2/")


def test_dropped_response_gives_its_slot_back(registry: FakeRegistry) -> None:
    limiter = HostLimiter(1)
    transport = LimitTransport(HttpTransport(), limiter)
    response = send(transport, registry.url + "/v2/")
    del response
    gc.collect()
    semaphore = limiter.semaphore(Origin.of(registry.url))
    assert semaphore.acquire(timeout=1)
    semaphore.release()


def test_closing_twice_releases_once(registry: FakeRegistry) -> None:
    limiter = HostLimiter(1)
    response = send(LimitTransport(HttpTransport(), limiter), registry.url + "/v2/")
    response.close()
    response.close()  # a BoundedSemaphore would raise on a second release


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_limit_must_be_a_positive_integer(limit: object) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        HostLimiter(limit)  # type: ignore[arg-type]

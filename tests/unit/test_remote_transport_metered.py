"""MeteredTransport: one count per request sent, response bytes as read off the wire, labels from the path and
the caller's context."""

from __future__ import annotations

import io
from typing import Any

import pytest
import requests
import urllib3
from prometheus_client import REGISTRY
from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter

from layerfill.remote.errors import UpstreamError
from layerfill.remote.transport.metered import MeteredTransport, kind_of, request_kind, upstream_reason

pytestmark = pytest.mark.unit

D = "sha256:" + "0" * 64


class Canned(BaseAdapter):
    def __init__(self, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None,
                 fail: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.status, self.body, self.headers, self.fail = status, body, headers or {}, fail

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        if self.fail:
            raise UpstreamError("connection refused", url=request.url, transient=True)
        r = Response()
        r.status_code = self.status
        r.headers.update(self.headers)
        r.raw = urllib3.HTTPResponse(body=io.BytesIO(self.body), preload_content=False, status=self.status)
        r.url = request.url or ""
        r.request = request
        return r

    def close(self) -> None:
        pass


def req(url: str, method: str = "GET") -> PreparedRequest:
    return requests.Request(method, url).prepare()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_kind_from_the_path_then_the_context() -> None:
    assert kind_of(f"https://r.example/v2/library/debian/manifests/{D}") == "manifest"
    assert kind_of("https://r.example/v2/a/b/c/manifests/latest") == "manifest"
    assert kind_of(f"https://r.example/v2/library/debian/blobs/{D}") == "blob"
    assert kind_of("https://r.example/v2/") == "other"
    assert kind_of("https://s3.example/bucket/data?sig=x") == "other"
    with request_kind("blob"):
        assert kind_of("https://s3.example/bucket/data?sig=x") == "blob"
        assert kind_of(f"https://r.example/v2/x/manifests/{D}") == "manifest"  # the path wins


def test_counts_requests_and_wire_bytes_when_closed() -> None:
    t = MeteredTransport(Canned(body=b"x" * 1000), "route-a")
    url = f"http://u.example/v2/lib/x/blobs/{D}"
    before = value("layerfill_upstream_requests_total", route="route-a", kind="blob", reason="backfill",
                   method="GET", code="200")  # fmt: skip
    with upstream_reason("backfill"):
        r = t.send(req(url), stream=True)
    assert r.raw.read(600) == b"x" * 600
    r.close()
    r.close()  # counted once
    assert value("layerfill_upstream_requests_total", route="route-a", kind="blob", reason="backfill",
                 method="GET", code="200") == before + 1  # fmt: skip
    assert value("layerfill_upstream_response_bytes_total", route="route-a", kind="blob", reason="backfill") == 600


def test_errors_and_retry_after_are_counted() -> None:
    t = MeteredTransport(Canned(fail=True), "route-b")
    with pytest.raises(UpstreamError):
        t.send(req(f"http://u.example/v2/x/manifests/{D}"))
    assert value("layerfill_upstream_requests_total", route="route-b", kind="manifest", reason="fill",
                 method="GET", code="error") == 1  # fmt: skip
    t = MeteredTransport(Canned(status=429, headers={"Retry-After": "3"}), "route-b")
    t.send(req(f"http://u.example/v2/x/manifests/{D}", "HEAD")).close()
    assert value("layerfill_upstream_requests_total", route="route-b", kind="manifest", reason="fill",
                 method="HEAD", code="429") == 1  # fmt: skip
    assert value("layerfill_upstream_retry_after_total", route="route-b") == 1


def test_token_chain_counts_as_token() -> None:
    t = MeteredTransport(Canned(body=b'{"token":"t"}'), "route-c", kind="token")
    t.send(req(f"http://auth.example/token?scope=repository:x:pull&x=/v2/x/blobs/{D}")).close()
    assert value("layerfill_upstream_requests_total", route="route-c", kind="token", reason="fill",
                 method="GET", code="200") == 1  # fmt: skip


def test_bad_labels_are_refused() -> None:
    with pytest.raises(ValueError):
        MeteredTransport(Canned(), "r", kind="bogus")
    with pytest.raises(ValueError), upstream_reason("whatever"):
        pass

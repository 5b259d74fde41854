"""The innermost transport: pooled HTTP connections, with failures turned into safe typed errors."""

from __future__ import annotations

from typing import Any

import requests
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from layerfill.remote.transport.base import translate_error


class HttpTransport(HTTPAdapter):
    """`HTTPAdapter` with urllib3's own retries off (RetryTransport owns retrying, once, in one place)
    and exceptions re-raised as UpstreamError without the library message (it embeds full URLs)."""

    def __init__(self, *, pool_connections: int = 4, pool_maxsize: int = 8) -> None:
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=Retry(total=0, read=False, redirect=False, raise_on_status=False),
        )

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        try:
            return super().send(request, **kwargs)
        except (requests.RequestException, OSError) as exc:
            raise translate_error(exc, request.method, request.url) from None

    def __repr__(self) -> str:
        return f"HttpTransport(pool_maxsize={self._pool_maxsize})"

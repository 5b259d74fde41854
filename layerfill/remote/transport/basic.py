"""HTTP Basic auth for an upstream configured with a username and password.

Reactive, as registries expect: a request goes out without credentials; when the upstream itself answers
401 with a `Basic` challenge, it is sent again with them, and from then on every request to that origin
carries them up front. Credentials are only ever attached to the upstream's own origin
(scheme://host:port): a redirect to blob storage on another host, or a token realm, never gets them here.
"""

from __future__ import annotations

from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter

from layerfill.remote.credentials import Credentials
from layerfill.remote.transport.base import Origin, WrappingTransport, discard, with_header
from layerfill.remote.transport.challenge import find_challenge


class BasicTransport(WrappingTransport):
    def __init__(self, inner: BaseAdapter, origin: Origin, credentials: Credentials) -> None:
        super().__init__(inner)
        self.origin = origin
        self._credentials = credentials
        self._challenged = False  # set once; a racing thread at worst pays one extra 401

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        if "Authorization" in request.headers or Origin.of(request.url or "") != self.origin:
            return self.inner.send(request, **kwargs)
        if self._challenged:
            return self.inner.send(self._authorized(request), **kwargs)
        response = self.inner.send(request, **kwargs)
        if response.status_code != 401 or find_challenge(response.headers.get("WWW-Authenticate"), "basic") is None:
            return response
        discard(response)
        self._challenged = True
        return self.inner.send(self._authorized(request), **kwargs)

    def _authorized(self, request: PreparedRequest) -> PreparedRequest:
        return with_header(request, "Authorization", self._credentials.authorization())

    def __repr__(self) -> str:
        return f"BasicTransport({self.inner!r}, origin={str(self.origin)!r}, user={self._credentials.username!r})"

"""A per-host concurrency limit shared by every thread (and every client given the same limiter).

A slot is held from the moment a request is sent until its response is closed, so a streamed blob
download keeps its slot for as long as its body is being read, not just until the headers arrive.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter

from layerfill.remote.transport.base import Origin, WrappingTransport


class HostLimiter:
    """One bounded semaphore per origin (scheme://host:port), created on first use."""

    def __init__(self, limit: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"max_concurrency must be a positive integer, got {limit!r}")
        self.limit = limit
        self._semaphores: dict[Origin, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def semaphore(self, origin: Origin) -> threading.BoundedSemaphore:
        with self._lock:
            semaphore = self._semaphores.get(origin)
            if semaphore is None:
                semaphore = self._semaphores[origin] = threading.BoundedSemaphore(self.limit)
            return semaphore

    def __repr__(self) -> str:
        return f"HostLimiter(limit={self.limit})"


class _Release:
    """Release a semaphore exactly once, whoever gets there first (close, error or garbage collection)."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore: threading.BoundedSemaphore | None = semaphore
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            semaphore, self._semaphore = self._semaphore, None
        if semaphore is not None:
            semaphore.release()


class LimitTransport(WrappingTransport):
    def __init__(self, inner: BaseAdapter, limiter: HostLimiter) -> None:
        super().__init__(inner)
        self.limiter = limiter

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        semaphore = self.limiter.semaphore(Origin.of(request.url or ""))
        semaphore.acquire()
        release = _Release(semaphore)
        try:
            response = self.inner.send(request, **kwargs)
        except BaseException:
            release()
            raise
        if not kwargs.get("stream", False):
            # Without streaming the caller reads the body right away: read it inside the slot.
            try:
                _ = response.content
            finally:
                release()
            return response
        close = response.close

        def close_and_release() -> None:
            try:
                close()
            finally:
                release()

        response.close = close_and_release  # type: ignore[method-assign]
        # Safety net: a response dropped without close() still gives its slot back.
        weakref.finalize(response, release)
        return response

    def __repr__(self) -> str:
        return f"LimitTransport({self.inner!r}, {self.limiter!r})"

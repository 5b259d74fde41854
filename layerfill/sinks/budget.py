"""A process-wide byte budget for upload buffers (pure: threads and a lock, no I/O).

A transfer reserves a part's bytes before it reads the part into memory and gives them back once the part is
uploaded, so the bytes held in part buffers never exceed `capacity`, however many transfers run at once.
Waiters are served in arrival order, so a full-size part is never starved by a stream of smaller ones. A single
reservation larger than the whole budget still proceeds, alone, once nothing else is held: capping it would
deadlock the transfer that needs it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self._held = 0
        self._peak = 0
        self._queue: deque[object] = deque()  # one token per waiting reservation, oldest first
        self._cond = threading.Condition()

    @property
    def held(self) -> int:
        """Bytes reserved and not yet released."""
        with self._cond:
            return self._held

    @property
    def peak(self) -> int:
        """The most bytes ever held at once."""
        with self._cond:
            return self._peak

    def acquire(self, n: int) -> None:
        """Block until `n` bytes fit (or, for more than the capacity, until nothing else is held)."""
        if n < 0:
            raise ValueError(f"cannot reserve {n} bytes")
        token = object()
        with self._cond:
            self._queue.append(token)
            try:
                self._cond.wait_for(lambda: self._queue[0] is token and self._fits(n))
            finally:
                # Leaving (granted, or interrupted while waiting) lets the next waiter try.
                self._queue.remove(token)
                self._cond.notify_all()
            self._held += n
            self._peak = max(self._peak, self._held)

    def release(self, n: int) -> None:
        with self._cond:
            if n < 0 or n > self._held:
                raise ValueError(f"cannot release {n} bytes: {self._held} are held")
            self._held -= n
            self._cond.notify_all()

    @contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        """Hold `n` bytes for the block; released however the block ends."""
        self.acquire(n)
        try:
            yield
        finally:
            self.release(n)

    def _fits(self, n: int) -> bool:
        return self._held + n <= self.capacity or self._held == 0

"""A process-wide byte budget for upload buffers (pure: threads and a lock, no I/O).

A transfer reserves a part's bytes before it reads the part into memory and gives them back once the part is
uploaded, so the bytes held in part buffers never exceed `capacity`, however many transfers run at once.
Waiters are served in arrival order, so a full-size part is never starved by a stream of smaller ones. A single
reservation larger than the whole budget still proceeds, alone, once nothing else is held: capping it would
deadlock the transfer that needs it.

`buffer(n)` reserves and lends a buffer of `n` bytes. A returned buffer is kept for the next reservation of the same
size while other transfers are running: a fresh 8 MiB bytearray is zeroed and mapped page by page each time (6.6%
of a blob worker's time in a fill profile, on cores the S3 server shares). Kept and lent buffers together stay
within the capacity (kept ones are dropped, oldest first, to make room), and all kept ones are dropped as soon as
nothing is held, so an idle process holds no part memory.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

# Smaller buffers come from the heap cheaply and are not kept (the kept list stays short: capacity / 1 MiB).
REUSE_MIN_BYTES = 1024 * 1024


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self._held = 0
        self._peak = 0
        self._queue: deque[object] = deque()  # one token per waiting reservation, oldest first
        self._cond = threading.Condition()
        self._kept: deque[bytearray] = deque()  # returned buffers, oldest first
        self._kept_bytes = 0

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
            if self._held == 0:
                self._drop_kept(self._kept_bytes)
            self._cond.notify_all()

    @property
    def kept(self) -> int:
        """Bytes in buffers kept for reuse (not held)."""
        with self._cond:
            return self._kept_bytes

    @contextmanager
    def buffer(self, n: int) -> Iterator[bytearray]:
        """Hold `n` bytes for the block and lend a bytearray of that length (not zeroed when reused: callers
        overwrite what they use). The caller must keep no reference to it after the block."""
        self.acquire(n)
        try:
            if n < REUSE_MIN_BYTES:
                yield bytearray(n)
                return
            buf = self._take(n)
            try:
                yield buf
            finally:
                self._keep(buf)
        finally:
            self.release(n)

    def _take(self, n: int) -> bytearray:
        with self._cond:
            for i, buf in enumerate(self._kept):
                if len(buf) == n:
                    del self._kept[i]
                    self._kept_bytes -= n
                    return buf
            # A new buffer: make room among the kept ones so that kept + held stays within the capacity.
            self._drop_kept(self._kept_bytes + self._held - self.capacity)
        return bytearray(n)

    def _keep(self, buf: bytearray) -> None:
        with self._cond:
            self._kept.append(buf)
            self._kept_bytes += len(buf)
            # The lender's bytes are still held (released next): count the buffer once.
            self._drop_kept(self._kept_bytes + self._held - len(buf) - self.capacity)

    def _drop_kept(self, nbytes: int) -> None:
        while nbytes > 0 and self._kept:
            buf = self._kept.popleft()
            self._kept_bytes -= len(buf)
            nbytes -= len(buf)

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

"""Keep part buffers out of glibc's heap arenas, so that freeing one gives its memory back to the OS.

glibc serves an allocation from the calling thread's arena unless it reaches the mmap threshold, and it raises
that threshold (up to 32 MiB) each time a large mmapped block is freed. After the first part buffer is freed,
16 MiB parts therefore come from the arenas of the transfer threads, which keep freed space, fragmented, instead
of returning it: measured with 8 transfers and a 64 MiB budget, RSS grew by ~155 MiB; with the threshold pinned
below the smallest part (S3's 5 MiB), by ~90 MiB at the same throughput (docs/benchmarks.md). Setting it with
mallopt also turns the dynamic raise off. An operator's MALLOC_MMAP_THRESHOLD_ wins; off glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
PART_BUFFER_THRESHOLD = 4 * 1024 * 1024  # below S3's 5 MiB minimum part: every part buffer is mmapped


def pin_mmap_threshold(nbytes: int = PART_BUFFER_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at `nbytes`; True if it was set here."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, nbytes) != 1:
        log.warning("could not set glibc's mmap threshold to %d bytes", nbytes)
        return False
    return True

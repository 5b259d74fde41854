"""The state store: what layerfill knows about images, blobs, scans, blob leases and checkpoints.

One class for callers, `StateStore`, made of one part per subject (each its own module, over the shared engine
of base.py): images.py, reports.py, scans.py, leases.py, checkpoints.py; the supply-chain checks are referrer_checks.py.
"""

from __future__ import annotations

from .base import ERROR_MAX
from .checkpoints import Checkpoints
from .images import MISSING_SHOWN, ImageQueries
from .leases import BlobLeaseQueries
from .reports import LIST_LIMIT_MAX, ImageReports
from .scans import ScanQueries

__all__ = ["ERROR_MAX", "LIST_LIMIT_MAX", "MISSING_SHOWN", "StateStore"]


class StateStore(ImageQueries, ImageReports, ScanQueries, BlobLeaseQueries, Checkpoints):
    """The state database at `url` (`sqlite:///path` or `postgresql+psycopg://...`).

    Opening runs the migrations up to the newest revision unless `migrate=False`, in which case a
    database at another revision is refused with SchemaVersionError. Safe to share between threads.
    """

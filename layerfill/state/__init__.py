"""The state database: which images are complete, what they are made of, scan results, checkpoints.

SQLite by default (a file several processes share), PostgreSQL by URL; schema managed by Alembic.
"""

from .engine import StateURLError, create_state_engine, parse_url
from .migrate import SchemaVersionError, current_revision, downgrade, head_revision, schema_diff, upgrade
from .records import (
    BlobKind,
    BlobOutcome,
    BlobRecord,
    ImageBlobRow,
    ImageRow,
    ImageStatus,
    ScanRow,
    ScanState,
    Totals,
)
from .store import StateStore

__all__ = [
    "BlobKind",
    "BlobOutcome",
    "BlobRecord",
    "ImageBlobRow",
    "ImageRow",
    "ImageStatus",
    "ScanRow",
    "ScanState",
    "SchemaVersionError",
    "StateStore",
    "StateURLError",
    "Totals",
    "create_state_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "parse_url",
    "schema_diff",
    "upgrade",
]

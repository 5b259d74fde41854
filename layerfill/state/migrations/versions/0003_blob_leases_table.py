"""blob leases: one upstream GET per blob across the fetcher group

Revision ID: 0003_blob_leases
Revises: 0002_referrer_checks
Create Date: 2026-12-02

Written by hand and frozen, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_blob_leases"
down_revision: str | Sequence[str] | None = "0002_referrer_checks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "blob_leases",
        sa.Column("digest", sa.String(140), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("acquired_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_blob_leases")),
    )


def downgrade() -> None:
    op.drop_table("blob_leases")

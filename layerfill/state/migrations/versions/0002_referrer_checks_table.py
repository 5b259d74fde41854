"""referrer_checks: the last look for each image's signatures, attestations and SBOMs

Revision ID: 0002_referrer_checks
Revises: 0001
Create Date: 2026-12-02

Written by hand and frozen, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_referrer_checks"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "referrer_checks",
        sa.Column("registry", sa.String(300), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(140), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("found", sa.JSON(), nullable=False),
        sa.Column("signatures", sa.Integer(), nullable=False),
        sa.Column("attestations", sa.Integer(), nullable=False),
        sa.Column("sboms", sa.Integer(), nullable=False),
        sa.Column("other", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("registry", "repository", "digest", name=op.f("pk_referrer_checks")),
    )


def downgrade() -> None:
    op.drop_table("referrer_checks")

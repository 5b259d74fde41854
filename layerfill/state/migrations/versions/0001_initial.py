"""initial schema: images, blobs, image_blobs, scans, kv

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand and frozen: it spells out its types and allowed values instead of importing the models,
so later model changes cannot rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(name))


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("registry", sa.String(300), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(140), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=True),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("fetched_bytes", sa.BigInteger(), nullable=False),
        sa.Column("blob_count", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("completed_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("registry", "repository", "digest", name=op.f("uq_images_registry_repository_digest")),
        _one_of("status", ("pending", "filling", "complete", "failed", "partial"), "ck_images_image_status"),
    )
    op.create_index("ix_images_status_updated_at", "images", ["status", "updated_at"])
    op.create_index("ix_images_updated_at", "images", ["updated_at"])

    op.create_table(
        "blobs",
        sa.Column("digest", sa.String(140), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=True),
        sa.Column("first_stored_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_blobs")),
    )

    op.create_table(
        "image_blobs",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(140), nullable=False),
        sa.Column("manifest_digest", sa.String(140), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "digest", "manifest_digest", name=op.f("pk_image_blobs")),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_image_blobs_image_id_images"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["digest"], ["blobs.digest"], name=op.f("fk_image_blobs_digest_blobs")),
        _one_of("kind", ("manifest", "config", "layer"), "ck_image_blobs_blob_kind"),
        _one_of("outcome", ("fetched", "linked", "present"), "ck_image_blobs_blob_outcome"),
    )
    op.create_index("ix_image_blobs_digest", "image_blobs", ["digest"])

    op.create_table(
        "scans",
        sa.Column("registry", sa.String(300), nullable=False),
        sa.Column("manifest_digest", sa.String(140), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("scanner", sa.String(255), nullable=False),
        sa.Column("scanner_version", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("package_count", sa.Integer(), nullable=True),
        sa.Column("vulnerabilities", sa.JSON(), nullable=True),
        sa.Column("report_uri", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("registry", "manifest_digest", name=op.f("pk_scans")),
        _one_of("state", ("pending", "indexed", "index_error", "unsupported"), "ck_scans_scan_state"),
    )

    op.create_table(
        "kv",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_kv")),
    )


def downgrade() -> None:
    op.drop_table("kv")
    op.drop_table("scans")
    op.drop_index("ix_image_blobs_digest", table_name="image_blobs")
    op.drop_table("image_blobs")
    op.drop_table("blobs")
    op.drop_index("ix_images_updated_at", table_name="images")
    op.drop_index("ix_images_status_updated_at", table_name="images")
    op.drop_table("images")

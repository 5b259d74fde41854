"""The state database's tables (SQLAlchemy 2 typed ORM). Any change here needs a new migration in
migrations/versions/; a unit test fails while models and migrations disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .records import MEDIA_TYPE_MAX, TEXT_MAX, BlobKind, BlobOutcome, ImageStatus, ScanState

# Explicit names keep constraints identical on SQLite and PostgreSQL, which Alembic needs to compare them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

REGISTRY_MAX = 300  # host (253) + ":port", or a bracketed IPv6 address
REPOSITORY_MAX = 255
DIGEST_MAX = 140  # "sha512:" + 128 hex
REFERENCE_MAX = 128  # tags are at most 128 characters
ENUM_MAX = 16


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite would otherwise drop the offset silently)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: state timestamps must carry a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(enum: type[StrEnum], name: str) -> sa.Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL enum: adding a value later stays a plain migration.
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=ENUM_MAX,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative reserves the attribute name `registry`: the `registry` columns map to `registry_host`."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Image(Base):
    """One manifest (as pulled) in one repository of one registry, and how far its fill got."""

    __tablename__ = "images"
    __table_args__ = (
        sa.UniqueConstraint("registry", "repository", "digest"),  # the fetcher's fast-path lookup
        sa.Index("ix_images_status_updated_at", "status", "updated_at"),
        sa.Index("ix_images_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    registry_host: Mapped[str] = mapped_column("registry", sa.String(REGISTRY_MAX))
    repository: Mapped[str] = mapped_column(sa.String(REPOSITORY_MAX))
    digest: Mapped[str] = mapped_column(sa.String(DIGEST_MAX))
    media_type: Mapped[str | None] = mapped_column(sa.String(MEDIA_TYPE_MAX))
    reference: Mapped[str | None] = mapped_column(sa.String(REFERENCE_MAX))
    status: Mapped[ImageStatus] = mapped_column(_enum(ImageStatus, "image_status"))
    total_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    fetched_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    blob_count: Mapped[int] = mapped_column(sa.Integer)
    first_seen_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer)
    last_event_id: Mapped[str | None] = mapped_column(sa.String(TEXT_MAX))


class Blob(Base):
    """A blob or manifest whose data is known to be in storage (shared by every image that uses it)."""

    __tablename__ = "blobs"

    digest: Mapped[str] = mapped_column(sa.String(DIGEST_MAX), primary_key=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    media_type: Mapped[str | None] = mapped_column(sa.String(MEDIA_TYPE_MAX))
    first_stored_at: Mapped[datetime]


class ImageBlob(Base):
    """What one complete image needs: each blob, under the (child) manifest that references it."""

    __tablename__ = "image_blobs"
    __table_args__ = (sa.Index("ix_image_blobs_digest", "digest"),)

    image_id: Mapped[int] = mapped_column(sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    digest: Mapped[str] = mapped_column(sa.ForeignKey("blobs.digest"), primary_key=True)
    manifest_digest: Mapped[str] = mapped_column(sa.String(DIGEST_MAX), primary_key=True)
    kind: Mapped[BlobKind] = mapped_column(_enum(BlobKind, "blob_kind"))
    outcome: Mapped[BlobOutcome] = mapped_column(_enum(BlobOutcome, "blob_outcome"))


class Scan(Base):
    """The latest scan of a manifest; the same content in two repositories of a registry is scanned once."""

    __tablename__ = "scans"

    registry_host: Mapped[str] = mapped_column("registry", sa.String(REGISTRY_MAX), primary_key=True)
    manifest_digest: Mapped[str] = mapped_column(sa.String(DIGEST_MAX), primary_key=True)
    repository: Mapped[str] = mapped_column(sa.String(REPOSITORY_MAX))
    scanner: Mapped[str] = mapped_column(sa.String(TEXT_MAX))
    scanner_version: Mapped[str | None] = mapped_column(sa.String(TEXT_MAX))
    state: Mapped[ScanState] = mapped_column(_enum(ScanState, "scan_state"))
    package_count: Mapped[int | None] = mapped_column(sa.Integer)
    # none_as_null: "no result" is SQL NULL, not the JSON value null.
    vulnerabilities: Mapped[dict[str, int] | None] = mapped_column(sa.JSON(none_as_null=True))
    report_uri: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer)
    requested_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class KeyValue(Base):
    """Small checkpoints such as backfill cursors."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(sa.String(TEXT_MAX), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)
    updated_at: Mapped[datetime]


class ReferrerCheck(Base):
    """The last look for an image's supply-chain artifacts at its upstream: when, what each tag named then, and
    the counts by kind. Its own table: checks run on their own cadence (at most once per interval per image) and
    never touch the `images` rows the fill updates."""

    __tablename__ = "referrer_checks"

    registry_host: Mapped[str] = mapped_column("registry", sa.String(REGISTRY_MAX), primary_key=True)
    repository: Mapped[str] = mapped_column(sa.String(REPOSITORY_MAX), primary_key=True)
    digest: Mapped[str] = mapped_column(sa.String(DIGEST_MAX), primary_key=True)
    checked_at: Mapped[datetime]
    # layerfill.oci.referrers.Memory.to_json(): per tag its digest and artifacts, and referrers API support.
    found: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    signatures: Mapped[int] = mapped_column(sa.Integer)
    attestations: Mapped[int] = mapped_column(sa.Integer)
    sboms: Mapped[int] = mapped_column(sa.Integer)
    other: Mapped[int] = mapped_column(sa.Integer)
    bytes: Mapped[int] = mapped_column(sa.BigInteger)


class BlobLease(Base):
    """Who in the consumer group is fetching a blob from its upstream right now, until when (renewed while the
    transfer runs). A crashed holder's lease simply expires; another fetcher then takes it."""

    __tablename__ = "blob_leases"

    digest: Mapped[str] = mapped_column(sa.String(DIGEST_MAX), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(TEXT_MAX))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]

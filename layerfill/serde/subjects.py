"""Compatibility levels of the event subjects in the schema registry (Confluent API: Confluent, Apicurio's ccompat).

Every subject gets BACKWARD_TRANSITIVE: layerfill's readers accept data written with every released schema, not
only the newest (see layerfill/serde/compat.py), so the registry must refuse a schema that cannot read any older
version, not just the previous one. Idempotent: a second run reports every subject unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from layerfill.config.settings import TopicsSettings
from layerfill.serde.catalog import SchemaCatalog
from layerfill.serde.confluent import subject_for

COMPATIBILITY = "BACKWARD_TRANSITIVE"
_NOT_FOUND = 404

SubjectAction = Literal["config-updated", "unchanged", "error"]


class CompatibilityClient(Protocol):
    """The calls of ``confluent_kafka.schema_registry.SchemaRegistryClient`` used here."""

    def get_compatibility(self, subject_name: str | None = None) -> str: ...

    def set_compatibility(self, subject_name: str | None = None, level: str | None = None) -> str: ...

    def register_schema(self, subject_name: str, schema: Schema, normalize_schemas: bool = False) -> int: ...


@dataclass
class SubjectChange:
    subject: str
    action: SubjectAction
    detail: str = ""


def event_subjects(topics: TopicsSettings) -> list[tuple[str, str]]:
    """(subject, record) of each topic layerfill writes Avro events to under the topic-name strategy. Retry and
    dead-letter topics carry the original records' bytes (and schema ids), so they have no subject of their own."""
    return [
        (subject_for(topics.manifest_pulled.name), "ManifestPulled"),
        (subject_for(topics.layer_cached.name), "LayerCached"),
        (subject_for(topics.image_cached.name), "ImageCached"),
        (subject_for(topics.image_scanned.name), "ImageScanned"),
    ]


def _current_level(client: CompatibilityClient, subject: str) -> str | None:
    """The subject's own level; None when it has none (the registry's global default applies)."""
    try:
        return client.get_compatibility(subject).upper()
    except SchemaRegistryError as exc:
        if exc.http_status_code == _NOT_FOUND:
            return None
        raise


def ensure_compatibility(
    client: CompatibilityClient,
    subjects: list[tuple[str, str]],
    level: str = COMPATIBILITY,
    catalog: SchemaCatalog | None = None,
) -> list[SubjectChange]:
    """Set ``level`` on each subject that does not have it. A registry that configures only existing subjects
    (404 on the first PUT) gets the record's current schema registered first, as the first producer would."""
    catalog = catalog or SchemaCatalog()
    changes: list[SubjectChange] = []
    for subject, record in subjects:
        try:
            current = _current_level(client, subject)
            if current == level:
                changes.append(SubjectChange(subject, "unchanged", f"compatibility={level}"))
                continue
            registered = ""
            try:
                client.set_compatibility(subject, level)
            except SchemaRegistryError as exc:
                if exc.http_status_code != _NOT_FOUND:
                    raise
                schema_id = client.register_schema(subject, Schema(catalog.current_json(record), "AVRO"))
                registered = f" (registered {record} as schema id {schema_id} first)"
                client.set_compatibility(subject, level)
            before = current or "registry default"
            changes.append(SubjectChange(subject, "config-updated", f"compatibility {before} -> {level}{registered}"))
        except SchemaRegistryError as exc:
            changes.append(SubjectChange(subject, "error", f"{exc.http_status_code}: {exc.error_message}"))
        except Exception as exc:  # transport errors of the registry client's HTTP stack
            changes.append(SubjectChange(subject, "error", repr(exc)))
    return changes

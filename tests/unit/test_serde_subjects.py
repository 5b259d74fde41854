"""Compatibility levels on the event subjects: what is set, what is reported, and the 404 path of registries that
configure only existing subjects. The registry here is a stand-in for this one function; the real one (Apicurio's
Confluent API) is exercised by tests/integration/test_schema_registry.py."""

from __future__ import annotations

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from layerfill.config.settings import TopicsSettings
from layerfill.serde.subjects import COMPATIBILITY, ensure_compatibility, event_subjects

pytestmark = pytest.mark.unit


class Registry:
    def __init__(self, *, configure_unknown: bool = True, fail: int | None = None) -> None:
        self.levels: dict[str, str] = {}
        self.subjects: dict[str, list[str]] = {}
        self.configure_unknown = configure_unknown
        self.fail = fail

    def get_compatibility(self, subject_name: str | None = None) -> str:
        if self.fail:
            raise SchemaRegistryError(self.fail, 50001, "registry down")
        if subject_name not in self.levels:
            raise SchemaRegistryError(404, 40408, f"Subject '{subject_name}' does not have subject-level compatibility")
        return self.levels[subject_name]

    def set_compatibility(self, subject_name: str | None = None, level: str | None = None) -> str:
        if not self.configure_unknown and subject_name not in self.subjects:
            raise SchemaRegistryError(404, 40401, f"Subject '{subject_name}' not found")
        self.levels[str(subject_name)] = str(level)
        return str(level)

    def register_schema(self, subject_name: str, schema: Schema, normalize_schemas: bool = False) -> int:
        self.subjects.setdefault(subject_name, []).append(schema.schema_str)
        return 7


def test_event_subjects_follow_the_topic_names() -> None:
    subjects = event_subjects(TopicsSettings())
    assert subjects == [
        ("layerfill.manifest-pulled-value", "ManifestPulled"),
        ("layerfill.layer-cached-value", "LayerCached"),
        ("layerfill.image-cached-value", "ImageCached"),
        ("layerfill.image-scanned-value", "ImageScanned"),
    ]


def test_sets_backward_transitive_once_then_reports_unchanged() -> None:
    reg = Registry()
    reg.levels["layerfill.layer-cached-value"] = "BACKWARD"
    first = ensure_compatibility(reg, event_subjects(TopicsSettings()))
    assert [c.action for c in first] == ["config-updated"] * 4
    assert first[0].detail == f"compatibility registry default -> {COMPATIBILITY}"
    assert first[1].detail == f"compatibility BACKWARD -> {COMPATIBILITY}"
    assert set(reg.levels.values()) == {"BACKWARD_TRANSITIVE"} and not reg.subjects
    second = ensure_compatibility(reg, event_subjects(TopicsSettings()))
    assert [c.action for c in second] == ["unchanged"] * 4


def test_a_registry_that_configures_only_known_subjects_gets_the_schema_first() -> None:
    reg = Registry(configure_unknown=False)
    [change] = ensure_compatibility(reg, [("t-value", "ManifestPulled")])
    assert change.action == "config-updated" and "registered ManifestPulled as schema id 7 first" in change.detail
    assert '"ManifestPulled"' in reg.subjects["t-value"][0] and reg.levels["t-value"] == COMPATIBILITY


def test_errors_are_reported_per_subject_not_raised() -> None:
    [change] = ensure_compatibility(Registry(fail=503), [("t-value", "ManifestPulled")])
    assert change.action == "error" and change.detail == "503: registry down"

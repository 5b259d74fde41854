"""Typed models of image manifests and indexes, parsed from raw bytes with field-naming errors."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from layerfill.oci import mediatypes as mt
from layerfill.oci.reference import Digest, InvalidReference

# The one cap on a manifest's bytes, fetched, parsed or read from storage alike (distribution's own cap).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 10_000
_MAX_SIZE = 2**63 - 1
# RFC 6838 type/subtype with an optional +suffix; keeps header- and log-unsafe text out.
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class ManifestError(ValueError):
    """Base for manifests we cannot plan; `field` is the JSON path of the offending value."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{type(self).__name__} at {field}: {reason}")


class InvalidManifest(ManifestError):
    """Malformed JSON or a field with a wrong type or value."""


class UnsupportedManifest(ManifestError):
    """Well-formed but of a kind we do not handle (Docker schema 1, unknown media types)."""


class ManifestTooLarge(ManifestError):
    """Over the byte cap or the per-manifest entry cap."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`os/arch[/variant]`, e.g. `linux/arm64/v8`."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/architecture[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


@dataclass(frozen=True, slots=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)


def parse_manifest(
    data: bytes,
    media_type: str | None = None,
    *,
    max_bytes: int = MAX_MANIFEST_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> ImageManifest | ImageIndex:
    """Parse manifest bytes; `media_type` is the Content-Type it came with, if any.

    The kind comes from the Content-Type when it names a manifest or index type, else from the body's
    `mediaType`, else from its shape (`manifests` -> index, `config`/`layers` -> manifest). A body whose
    `mediaType` contradicts a specific Content-Type is refused, as registries do.
    """
    if len(data) > max_bytes:
        raise ManifestTooLarge("manifest", f"{len(data)} bytes exceeds the {max_bytes}-byte cap")
    header = mt.base_type(media_type)
    if header in mt.SCHEMA1_TYPES:
        raise UnsupportedManifest("mediaType", f"Docker schema 1 ({header}) is not supported")
    if header and header not in mt.GENERIC_CONTENT_TYPES and header not in _PLANNABLE:
        raise UnsupportedManifest("mediaType", f"{header!r} is not an image manifest or index type")

    doc = _load_json(data)
    schema_version = doc.get("schemaVersion")
    body_type = _optional_str(doc, "mediaType", "mediaType")
    if (type(schema_version) is int and schema_version == 1) or body_type in mt.SCHEMA1_TYPES:
        raise UnsupportedManifest("schemaVersion", "Docker schema 1 manifests are not supported")
    if type(schema_version) is not int or schema_version != 2:
        raise InvalidManifest("schemaVersion", f"must be the integer 2, got {schema_version!r}")

    kind = header if header in _PLANNABLE else None
    if body_type is not None:
        if body_type not in _PLANNABLE:
            raise UnsupportedManifest("mediaType", f"{body_type!r} is not an image manifest or index type")
        if kind is not None and body_type != kind:
            raise InvalidManifest("mediaType", f"body says {body_type!r} but the content type is {kind!r}")
        kind = body_type
    if kind is None:
        if "manifests" in doc and "config" not in doc and "layers" not in doc:
            kind = mt.OCI_INDEX
        elif "config" in doc or "layers" in doc:
            kind = mt.OCI_MANIFEST
        else:
            raise InvalidManifest("mediaType", "absent, and the body has neither 'manifests' nor 'config'")

    common = {
        "subject": _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None,
        "artifact_type": _optional_media_type(doc, "artifactType", "artifactType"),
        "annotations": _annotations(doc.get("annotations"), "annotations"),
    }
    if kind in mt.INDEX_TYPES:
        entries = _entries(doc, "manifests", max_entries)
        return ImageIndex(
            media_type=kind,
            manifests=tuple(_descriptor(item, f"manifests[{i}]") for i, item in enumerate(entries)),
            **common,
        )
    if "config" not in doc:
        raise InvalidManifest("config", "required in an image manifest")
    entries = _entries(doc, "layers", max_entries)
    return ImageManifest(
        media_type=kind,
        config=_descriptor(doc["config"], "config"),
        layers=tuple(_descriptor(item, f"layers[{i}]") for i, item in enumerate(entries)),
        **common,
    )


_PLANNABLE = mt.MANIFEST_TYPES | mt.INDEX_TYPES


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two parsers may pick different copies: refuse the ambiguity outright.
            raise InvalidManifest(key, "duplicate key")
        out[key] = value
    return out


def _load_json(data: bytes) -> dict[str, Any]:
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidManifest("manifest", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise InvalidManifest("manifest", f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise InvalidManifest("manifest", "JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("manifest", f"must be a JSON object, got {type(doc).__name__}")
    return doc


def _entries(doc: Mapping[str, Any], key: str, cap: int) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise InvalidManifest(key, f"must be a list, got {_json_type(value)}")
    if len(value) > cap:
        raise ManifestTooLarge(key, f"{len(value)} entries exceeds the cap of {cap}")
    return value


def _descriptor(value: Any, path: str) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidManifest(path, f"must be an object, got {_json_type(value)}")
    media_type = _optional_media_type(value, "mediaType", f"{path}.mediaType")
    if media_type is None:
        raise InvalidManifest(f"{path}.mediaType", "required")
    try:
        digest = str(Digest.parse(value.get("digest"), f"{path}.digest"))
    except InvalidReference as exc:
        raise InvalidManifest(f"{path}.digest", exc.reason) from None
    size = value.get("size")
    if type(size) is not int or not 0 <= size <= _MAX_SIZE:
        raise InvalidManifest(f"{path}.size", f"must be a non-negative integer, got {size!r}")
    urls = value.get("urls")
    if urls is None:
        urls = []
    if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
        raise InvalidManifest(f"{path}.urls", "must be a list of non-empty strings")
    platform = value.get("platform")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        urls=tuple(urls),
        platform=_platform(platform, f"{path}.platform") if platform is not None else None,
        annotations=_annotations(value.get("annotations"), f"{path}.annotations"),
        artifact_type=_optional_media_type(value, "artifactType", f"{path}.artifactType"),
    )


def _platform(value: Any, path: str) -> Platform:
    if not isinstance(value, dict):
        raise InvalidManifest(path, f"must be an object, got {_json_type(value)}")
    os_name = _optional_str(value, "os", f"{path}.os")
    arch = _optional_str(value, "architecture", f"{path}.architecture")
    if not os_name:
        raise InvalidManifest(f"{path}.os", "required")
    if not arch:
        raise InvalidManifest(f"{path}.architecture", "required")
    features = value.get("os.features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise InvalidManifest(f"{path}.os.features", "must be a list of strings")
    return Platform(
        os=os_name,
        architecture=arch,
        variant=_optional_str(value, "variant", f"{path}.variant") or None,
        os_version=_optional_str(value, "os.version", f"{path}.os.version") or None,
        os_features=tuple(features),
    )


def _annotations(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidManifest(path, f"must be an object, got {_json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidManifest(f"{path}.{key}", f"must be a string, got {_json_type(item)}")
    return dict(value)


def _optional_str(doc: Mapping[str, Any], key: str, path: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidManifest(path, f"must be a string, got {_json_type(value)}")
    return value


def _optional_media_type(doc: Mapping[str, Any], key: str, path: str) -> str | None:
    value = _optional_str(doc, key, path)
    if value is not None and _MEDIA_TYPE_RE.fullmatch(value) is None:
        raise InvalidManifest(path, f"{value!r} is not a media type (type/subtype)")
    return value


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )

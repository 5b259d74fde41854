import json
from typing import Any

import pytest

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    InvalidManifest,
    ManifestError,
    ManifestTooLarge,
    Platform,
    UnsupportedManifest,
    parse_manifest,
)

pytestmark = pytest.mark.unit


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


def desc(n: int, media_type: str = mt.OCI_LAYER_GZIP, size: int = 100, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": dg(n), "size": size, **extra}


def oci_manifest(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(1, mt.OCI_CONFIG, 50),
        "layers": [desc(2), desc(3, size=200)],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def oci_index(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(10, mt.OCI_MANIFEST, 500, platform={"os": "linux", "architecture": "amd64"}),
            desc(
                11,
                mt.OCI_MANIFEST,
                501,
                platform={"os": "linux", "architecture": "arm64", "variant": "v8"},
            ),
        ],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_parses_oci_manifest() -> None:
    parsed = parse_manifest(raw(oci_manifest(annotations={"a": "b"})), mt.OCI_MANIFEST)
    assert isinstance(parsed, ImageManifest)
    assert parsed.media_type == mt.OCI_MANIFEST
    assert parsed.config == Descriptor(mt.OCI_CONFIG, dg(1), 50)
    assert [layer.digest for layer in parsed.layers] == [dg(2), dg(3)]
    assert parsed.layers[1].size == 200
    assert parsed.annotations == {"a": "b"}


def test_parses_docker_manifest_with_foreign_layer() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(1, mt.DOCKER_CONFIG),
        "layers": [
            desc(2, mt.DOCKER_LAYER_FOREIGN_GZIP, urls=["https://example.invalid/layer"]),
            desc(3, mt.DOCKER_LAYER_GZIP),
        ],
    }
    parsed = parse_manifest(raw(doc), mt.DOCKER_MANIFEST)
    assert isinstance(parsed, ImageManifest)
    assert parsed.layers[0].urls == ("https://example.invalid/layer",)
    assert parsed.layers[0].media_type == mt.DOCKER_LAYER_FOREIGN_GZIP


def test_parses_oci_index_with_platforms_and_annotations() -> None:
    doc = oci_index()
    doc["manifests"].append(
        desc(
            12,
            mt.OCI_MANIFEST,
            300,
            platform={"os": "unknown", "architecture": "unknown"},
            annotations={"vnd.docker.reference.type": "attestation-manifest"},
        )
    )
    parsed = parse_manifest(raw(doc), mt.OCI_INDEX)
    assert isinstance(parsed, ImageIndex)
    assert [str(m.platform) for m in parsed.manifests] == ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]
    assert parsed.manifests[2].annotations["vnd.docker.reference.type"] == "attestation-manifest"


def test_parses_docker_manifest_list_with_windows_platform_fields() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            desc(
                20,
                mt.DOCKER_MANIFEST,
                platform={
                    "os": "windows",
                    "architecture": "amd64",
                    "os.version": "10.0.17763.1",
                    "os.features": ["win32k"],
                },
            )
        ],
    }
    parsed = parse_manifest(raw(doc), None)
    assert isinstance(parsed, ImageIndex)
    assert parsed.media_type == mt.DOCKER_MANIFEST_LIST
    platform = parsed.manifests[0].platform
    assert platform == Platform("windows", "amd64", None, "10.0.17763.1", ("win32k",))
    assert platform.to_dict() == {
        "os": "windows",
        "architecture": "amd64",
        "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
    }


@pytest.mark.parametrize(
    ("doc", "header", "expected_type", "expected_class"),
    [
        (oci_manifest(), None, mt.OCI_MANIFEST, ImageManifest),
        (oci_manifest(), "application/json", mt.OCI_MANIFEST, ImageManifest),
        (oci_manifest(), "application/octet-stream", mt.OCI_MANIFEST, ImageManifest),
        (oci_manifest(), "text/plain; charset=utf-8", mt.OCI_MANIFEST, ImageManifest),
        (oci_manifest(mediaType=None), None, mt.OCI_MANIFEST, ImageManifest),
        (oci_manifest(mediaType=None), mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST, ImageManifest),
        (oci_index(), "", mt.OCI_INDEX, ImageIndex),
        (oci_index(mediaType=None), None, mt.OCI_INDEX, ImageIndex),
        (oci_index(mediaType=None), mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST_LIST, ImageIndex),
        (oci_index(), mt.OCI_INDEX + "; charset=utf-8", mt.OCI_INDEX, ImageIndex),
    ],
)
def test_kind_detection(doc: dict[str, Any], header: str | None, expected_type: str, expected_class: type) -> None:
    parsed = parse_manifest(raw(doc), header)
    assert isinstance(parsed, expected_class)
    assert parsed.media_type == expected_type


def test_descriptor_to_dict_round_trips() -> None:
    entry = desc(
        5,
        mt.OCI_MANIFEST,
        urls=["https://x.invalid/a"],
        platform={"os": "linux", "architecture": "arm", "variant": "v7"},
        annotations={"k": "v"},
        artifactType="application/vnd.example+json",
    )
    parsed = parse_manifest(raw(oci_index(manifests=[entry])))
    assert isinstance(parsed, ImageIndex)
    assert parsed.manifests[0].to_dict() == entry


def schema1() -> dict[str, Any]:
    return {"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": [], "history": []}


@pytest.mark.parametrize(
    ("data", "header", "error", "field"),
    [
        # Docker schema 1, however it announces itself.
        (raw(schema1()), None, UnsupportedManifest, "schemaVersion"),
        (raw(schema1()), mt.DOCKER_SCHEMA1_SIGNED_MANIFEST, UnsupportedManifest, "mediaType"),
        (raw(schema1()), mt.DOCKER_SCHEMA1_MANIFEST, UnsupportedManifest, "mediaType"),
        (
            raw({"schemaVersion": 2, "mediaType": mt.DOCKER_SCHEMA1_MANIFEST}),
            None,
            UnsupportedManifest,
            "schemaVersion",
        ),
        # Unknown kinds.
        (raw(oci_manifest()), "application/vnd.example.thing", UnsupportedManifest, "mediaType"),
        (
            raw(oci_manifest(mediaType="application/vnd.oci.artifact.manifest.v1+json")),
            None,
            UnsupportedManifest,
            "mediaType",
        ),
        # Shape and envelope.
        (b"\xff\xfe", None, InvalidManifest, "manifest"),
        (b"{not json", None, InvalidManifest, "manifest"),
        (b"[]", None, InvalidManifest, "manifest"),
        (b"[" * 100_000 + b"]" * 100_000, None, InvalidManifest, "manifest"),
        (b'{"schemaVersion": 2, "schemaVersion": 2}', None, InvalidManifest, "schemaVersion"),
        (raw(oci_manifest(schemaVersion=None)), None, InvalidManifest, "schemaVersion"),
        (raw(oci_manifest(schemaVersion="2")), None, InvalidManifest, "schemaVersion"),
        (raw(oci_manifest(schemaVersion=True)), None, InvalidManifest, "schemaVersion"),
        (raw(oci_manifest(schemaVersion=3)), None, InvalidManifest, "schemaVersion"),
        (raw({"schemaVersion": 2}), None, InvalidManifest, "mediaType"),
        (raw(oci_manifest(mediaType=5)), None, InvalidManifest, "mediaType"),
        (raw(oci_manifest()), mt.OCI_INDEX, InvalidManifest, "mediaType"),
        (raw(oci_index()), mt.DOCKER_MANIFEST_LIST, InvalidManifest, "mediaType"),
        (raw(oci_manifest(config=None)), None, InvalidManifest, "config"),
        (raw(oci_manifest(layers=None)), None, InvalidManifest, "layers"),
        (raw(oci_manifest(layers={"a": 1})), None, InvalidManifest, "layers"),
        (raw(oci_index(manifests=None)), mt.OCI_INDEX, InvalidManifest, "manifests"),
        (raw(oci_manifest(config="sha256:00")), None, InvalidManifest, "config"),
        (raw(oci_manifest(annotations=[])), None, InvalidManifest, "annotations"),
        (raw(oci_manifest(annotations={"a": 1})), None, InvalidManifest, "annotations.a"),
        (raw(oci_manifest(artifactType="not a type")), None, InvalidManifest, "artifactType"),
        (raw(oci_manifest(subject={"digest": dg(1)})), None, InvalidManifest, "subject.mediaType"),
    ],
)
def test_rejects(data: bytes, header: str | None, error: type[ManifestError], field: str) -> None:
    with pytest.raises(error) as info:
        parse_manifest(data, header)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


def layer_with(**fields: Any) -> bytes:
    layer = desc(2)
    layer.update(fields)
    return raw(oci_manifest(layers=[desc(3), {k: v for k, v in layer.items() if v is not None}]))


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (layer_with(mediaType=None), "layers[1].mediaType", "required"),
        (layer_with(mediaType=""), "layers[1].mediaType", "not a media type"),
        (layer_with(mediaType="text\r\nX-Evil: 1/x"), "layers[1].mediaType", "not a media type"),
        (layer_with(digest=None), "layers[1].digest", "must be a string"),
        (layer_with(digest="sha256:xyz"), "layers[1].digest", "lower-case hex"),
        (layer_with(digest=f"sha256:{'a' * 63}"), "layers[1].digest", "64 hex"),
        (layer_with(digest=f"md5:{'a' * 32}"), "layers[1].digest", "sha256"),
        (layer_with(size=None), "layers[1].size", "non-negative integer"),
        (layer_with(size=-1), "layers[1].size", "non-negative integer"),
        (layer_with(size=1.5), "layers[1].size", "non-negative integer"),
        (layer_with(size="10"), "layers[1].size", "non-negative integer"),
        (layer_with(size=True), "layers[1].size", "non-negative integer"),
        (layer_with(size=2**63), "layers[1].size", "non-negative integer"),
        (layer_with(urls="https://x"), "layers[1].urls", "list of non-empty strings"),
        (layer_with(urls=[""]), "layers[1].urls", "list of non-empty strings"),
        (layer_with(platform="linux"), "layers[1].platform", "must be an object"),
        (layer_with(platform={"os": "linux"}), "layers[1].platform.architecture", "required"),
        (layer_with(platform={"architecture": "amd64"}), "layers[1].platform.os", "required"),
        (
            layer_with(platform={"os": "linux", "architecture": "amd64", "variant": 8}),
            "layers[1].platform.variant",
            "must be a string",
        ),
        (
            layer_with(platform={"os": "l", "architecture": "a", "os.features": "x"}),
            "layers[1].platform.os.features",
            "list of strings",
        ),
        (layer_with(annotations={"k": None}), "layers[1].annotations.k", "must be a string"),
        (raw(oci_manifest(layers=[desc(3), 7])), "layers[1]", "must be an object"),
    ],
)
def test_descriptor_errors_name_the_field(data: bytes, field: str, reason: str) -> None:
    with pytest.raises(InvalidManifest) as info:
        parse_manifest(data, mt.OCI_MANIFEST)
    assert info.value.field == field
    assert reason in info.value.reason


def test_index_descriptor_error_path() -> None:
    doc = oci_index()
    doc["manifests"][1]["platform"] = {"os": "linux"}
    with pytest.raises(InvalidManifest) as info:
        parse_manifest(raw(doc))
    assert info.value.field == "manifests[1].platform.architecture"


def test_size_cap() -> None:
    doc = oci_manifest(annotations={"pad": "x" * (4 * 1024 * 1024)})
    with pytest.raises(ManifestTooLarge) as info:
        parse_manifest(raw(doc), mt.OCI_MANIFEST)
    assert info.value.field == "manifest"
    small = raw(oci_manifest())
    assert isinstance(parse_manifest(small, max_bytes=len(small)), ImageManifest)
    with pytest.raises(ManifestTooLarge):
        parse_manifest(small, max_bytes=len(small) - 1)


def test_layer_count_cap_default_and_configurable() -> None:
    at_cap = raw(oci_manifest(layers=[desc(2)] * 10_000))
    assert len(parse_manifest(at_cap).layers) == 10_000  # type: ignore[union-attr]
    with pytest.raises(ManifestTooLarge) as info:
        parse_manifest(raw(oci_manifest(layers=[desc(2)] * 10_001)))
    assert info.value.field == "layers"
    with pytest.raises(ManifestTooLarge):
        parse_manifest(raw(oci_manifest()), max_entries=1)


def test_index_entry_cap() -> None:
    with pytest.raises(ManifestTooLarge) as info:
        parse_manifest(raw(oci_index()), max_entries=1)
    assert info.value.field == "manifests"


def test_platform_parse_and_str() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert str(Platform.parse("linux/amd64")) == "linux/amd64"
    for bad in ["linux", "linux/", "/amd64", "a/b/c/d", ""]:
        with pytest.raises(ValueError, match="os/architecture"):
            Platform.parse(bad)


def test_empty_layers_allowed_for_artifacts() -> None:
    doc = oci_manifest(config=desc(1, mt.OCI_EMPTY, 2), layers=[], artifactType="application/vnd.example.sbom+json")
    parsed = parse_manifest(raw(doc))
    assert isinstance(parsed, ImageManifest)
    assert parsed.layers == ()
    assert parsed.artifact_type == "application/vnd.example.sbom+json"

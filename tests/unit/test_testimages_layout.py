import json
from pathlib import Path

import pytest

from layerfill.oci import mediatypes as mt
from layerfill.oci.digest import digest_of
from layerfill.oci.manifest import ImageIndex, ImageManifest, Platform, parse_manifest
from layerfill.oci.reference import InvalidReference
from layerfill.testimages.layout import REF_NAME_ANNOTATION, OciLayout, read_tags

pytestmark = pytest.mark.unit


def load_blob(layout: OciLayout, digest: str) -> bytes:
    data = layout.blobs.path(digest).read_bytes()
    assert digest_of(data) == digest
    return data


def test_single_image_layout(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "img")
    a = layout.add_layer({"a": b"1"})
    b = layout.add_layer({"b": b"2"})
    image = layout.add_image([a, b], Platform("linux", "arm64", "v8"), history=["first", "second"])
    layout.tag("v1", image.manifest)
    layout.save()

    assert json.loads((tmp_path / "img" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index_json = json.loads((tmp_path / "img" / "index.json").read_text())
    assert index_json["schemaVersion"] == 2 and index_json["mediaType"] == mt.OCI_INDEX
    assert index_json["manifests"] == [
        {
            "mediaType": mt.OCI_MANIFEST,
            "digest": image.manifest.digest,
            "size": image.manifest.size,
            "annotations": {REF_NAME_ANNOTATION: "v1"},
        }
    ]

    manifest = parse_manifest(load_blob(layout, image.manifest.digest), mt.OCI_MANIFEST)
    assert isinstance(manifest, ImageManifest)
    assert [d.digest for d in manifest.layers] == [a.digest, b.digest]
    assert manifest.config == image.config

    config = json.loads(load_blob(layout, image.config.digest))
    assert config["architecture"] == "arm64" and config["os"] == "linux" and config["variant"] == "v8"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [a.diff_id, b.diff_id]}
    assert [h["created_by"] for h in config["history"]] == ["first", "second"]


def test_index_layout_and_retag(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path)
    base = layout.add_layer({"base": b"x"})
    amd = layout.add_image([base], Platform("linux", "amd64"))
    arm = layout.add_image([base], Platform("linux", "arm64"))
    index = layout.add_index([amd, arm])
    layout.tag("1", amd.manifest)
    layout.tag("1", index)  # retagging replaces
    layout.tag("amd", amd.manifest)
    layout.save()

    tags = read_tags(tmp_path)
    assert sorted(tags) == ["1", "amd"]
    assert tags["1"].digest == index.digest and tags["1"].media_type == mt.OCI_INDEX
    parsed = parse_manifest(load_blob(layout, index.digest))
    assert isinstance(parsed, ImageIndex)
    assert [(d.digest, str(d.platform)) for d in parsed.manifests] == [
        (amd.manifest.digest, "linux/amd64"),
        (arm.manifest.digest, "linux/arm64"),
    ]
    assert amd.manifest.digest != arm.manifest.digest  # configs differ by architecture


def test_history_length_must_match(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path)
    layer = layout.add_layer({"a": b"1"})
    with pytest.raises(ValueError, match="history"):
        layout.add_image([layer], Platform("linux", "amd64"), history=["a", "b"])


def test_bad_tag_is_refused(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path)
    index = layout.add_index([])
    with pytest.raises(InvalidReference):
        layout.tag("../x", index)

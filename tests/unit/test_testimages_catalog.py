import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from layerfill.oci.digest import digest_of
from layerfill.oci.manifest import ImageIndex, ImageManifest, parse_manifest
from layerfill.oci.plan import Plan
from layerfill.oci.reference import InvalidReference
from layerfill.testimages.__main__ import main
from layerfill.testimages.catalog import DEFAULT_LARGE_SIZE, Catalog, ImageInfo, build_catalog
from layerfill.testimages.push import PushError, find_layouts, inspect_raw, push_image, run_skopeo

pytestmark = pytest.mark.unit

LARGE = 2 * 1024 * 1024 + 3
NAMES = ["demo/app-a:1", "demo/app-b:1", "demo/multi:1", "demo/large:1"]
# The uncompressed tar does not depend on the zlib build, so its digest can be pinned.
BASE_DIFF_ID = "sha256:46b3c5b99a9fcaf0a14156182645ae8ffd3ebffe82afda1c6f1457ae533fe52c"


def require_skopeo() -> None:
    if shutil.which("skopeo") is None and not os.access("/usr/bin/skopeo", os.X_OK):
        if os.environ.get("LAYERFILL_SKIP_MISSING_TOOLS") == "1":
            pytest.skip("skopeo is not installed")
        pytest.fail("skopeo is not installed (apt-get install -y skopeo); LAYERFILL_SKIP_MISSING_TOOLS=1 skips")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return build_catalog(tmp_path_factory.mktemp("catalog"), large_size=LARGE)


def read_blob(catalog: Catalog, info: ImageInfo, digest: str) -> bytes:
    data = (catalog.root / info.layout_dir / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert digest_of(data) == digest
    return data


def test_catalog_names_and_shapes(catalog: Catalog) -> None:
    assert list(catalog.images) == NAMES
    assert DEFAULT_LARGE_SIZE == 64 * 1024 * 1024
    base = catalog.base_layer.digest
    assert catalog.base_layer.diff_id == BASE_DIFF_ID

    a, b = catalog.images["demo/app-a:1"], catalog.images["demo/app-b:1"]
    for info in (a, b):
        assert len(info.manifests) == 1 and info.digest == info.manifests[0].digest
        assert info.manifests[0].layers[0].digest == base
        assert len(info.manifests[0].layers) == 2
    assert a.manifests[0].layers[1].digest != b.manifests[0].layers[1].digest

    multi = catalog.images["demo/multi:1"]
    assert multi.media_type == "application/vnd.oci.image.index.v1+json"
    assert [m.platform for m in multi.manifests] == ["linux/amd64", "linux/arm64/v8"]
    amd, arm = multi.manifests
    assert amd.layers[0].digest == arm.layers[0].digest == base
    assert amd.layers[1].digest != arm.layers[1].digest
    assert amd.config.digest != arm.config.digest
    assert len(multi.blobs()) == 5  # shared base once, two own layers, two configs

    large = catalog.images["demo/large:1"]
    (layer,) = large.manifests[0].layers
    assert LARGE < layer.size < LARGE + 64 * 1024


def test_every_blob_matches_its_metadata(catalog: Catalog) -> None:
    for name, info in catalog.images.items():
        top = read_blob(catalog, info, info.digest)
        assert len(top) == info.size, name
        for m in info.manifests:
            manifest = parse_manifest(read_blob(catalog, info, m.digest))
            assert isinstance(manifest, ImageManifest)
            assert manifest.config.digest == m.config.digest
            assert [(d.digest, d.size) for d in manifest.layers] == [(x.digest, x.size) for x in m.layers]
            config = json.loads(read_blob(catalog, info, m.config.digest))
            assert f"{config['os']}/{config['architecture']}" == m.platform.rsplit("/v8", 1)[0]
            diff_ids = []
            for layer in m.layers:
                path = catalog.root / info.layout_dir / "blobs" / "sha256" / layer.digest.split(":")[1]
                assert path.stat().st_size == layer.size
                h = hashlib.sha256()
                with gzip.open(path) as f:
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(chunk)
                diff_ids.append(f"sha256:{h.hexdigest()}")
                assert diff_ids[-1] == layer.diff_id
            assert config["rootfs"]["diff_ids"] == diff_ids


def test_planner_agrees_with_catalog(catalog: Catalog) -> None:
    for name, info in catalog.images.items():
        top = read_blob(catalog, info, info.digest)
        plan = Plan(info.digest, len(top))
        parsed = parse_manifest(top)
        if isinstance(parsed, ImageIndex):
            for child in plan.add_index(info.digest, parsed):
                child_manifest = parse_manifest(read_blob(catalog, info, child.digest), child.media_type)
                assert isinstance(child_manifest, ImageManifest)
                plan.add_image(child.digest, child_manifest)
        else:
            plan.add_image(info.digest, parsed)
        assert plan.complete, name
        assert [(b.digest, b.size) for b in plan.blobs] == [(b.digest, b.size) for b in info.blobs()], name
        assert plan.skipped == []


def test_builds_are_deterministic(catalog: Catalog, tmp_path: Path) -> None:
    again = build_catalog(tmp_path, large_size=LARGE)
    assert again.to_dict() == catalog.to_dict()
    assert Catalog.load(tmp_path).to_dict() == catalog.to_dict()
    assert Catalog.load(tmp_path).images["demo/multi:1"].blobs() == catalog.images["demo/multi:1"].blobs()


def test_rebuild_in_place_drops_stale_blobs(tmp_path: Path) -> None:
    build_catalog(tmp_path, large_size=1024)
    stale = tmp_path / "demo" / "app-a" / "blobs" / "sha256" / ("0" * 64)
    stale.write_bytes(b"stale")
    catalog = build_catalog(tmp_path, large_size=0)
    assert not stale.exists()
    assert "demo/large:1" not in catalog.images
    # An earlier build's layout is not in the new catalog but is still on disk, as push would see it.
    assert sorted(layout.repository for layout in find_layouts(tmp_path)) == [
        "demo/app-a",
        "demo/app-b",
        "demo/large",
        "demo/multi",
    ]


def test_find_layouts(catalog: Catalog) -> None:
    layouts = find_layouts(catalog.root)
    assert [(x.repository, x.tags) for x in layouts] == [
        ("demo/app-a", ("1",)),
        ("demo/app-b", ("1",)),
        ("demo/large", ("1",)),
        ("demo/multi", ("1",)),
    ]


def test_skopeo_reads_the_layouts(catalog: Catalog) -> None:
    require_skopeo()
    for info in catalog.images.values():
        layout = catalog.root / info.layout_dir
        raw = inspect_raw(f"oci:{layout}:{info.tag}")
        assert digest_of(raw) == info.digest
        # `skopeo inspect` (no --raw) resolves an index to one platform and reads that image's config.
        for m in info.manifests:
            arch = m.platform.split("/")[1]
            described = json.loads(run_skopeo(["inspect", "--override-arch", arch, f"oci:{layout}:{info.tag}"]))
            assert described["Architecture"] == arch
            assert described["Layers"] == [layer.digest for layer in m.layers]


def test_skopeo_copies_a_layout_unchanged(catalog: Catalog, tmp_path: Path) -> None:
    require_skopeo()
    info = catalog.images["demo/multi:1"]
    src = catalog.root / info.layout_dir
    run_skopeo(["copy", "--all", f"oci:{src}:1", f"oci:{tmp_path / 'copy'}:copied"])
    assert digest_of(inspect_raw(f"oci:{tmp_path / 'copy'}:copied")) == info.digest
    copied = {p.name for p in (tmp_path / "copy" / "blobs" / "sha256").iterdir()}
    expected = {info.digest, *(m.digest for m in info.manifests), *(b.digest for b in info.blobs())}
    assert copied == {d.split(":")[1] for d in expected}


def test_cli_build_and_push_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--out", str(tmp_path / "out"), "--large-size", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(printed["images"]) == ["demo/app-a:1", "demo/app-b:1", "demo/multi:1"]
    assert (tmp_path / "out" / "catalog.json").is_file()

    assert main(["build", "--out", str(tmp_path / "x"), "--large-size", "-1"]) == 1
    assert "large_size" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["push", "--registry", "127.0.0.1:1", "--dir", str(tmp_path / "empty")]) == 1
    assert "no OCI layouts" in capsys.readouterr().err
    assert main(["push", "--registry", "bad host", "--dir", str(tmp_path / "out")]) == 1
    assert "invalid registry" in capsys.readouterr().err


def test_push_image_refuses_bad_arguments_before_running_skopeo(tmp_path: Path) -> None:
    layout = tmp_path / "a:b"
    with pytest.raises(PushError, match="contains ':'"):
        push_image(layout, "1", "127.0.0.1:1", "demo/x")
    with pytest.raises(InvalidReference) as info:
        push_image(tmp_path, "1", "127.0.0.1:1", "../etc")
    assert info.value.field == "repository"
    with pytest.raises(InvalidReference):
        push_image(tmp_path, "1", "127.0.0.1:1", "demo/x", dest_tag="-bad")
    with pytest.raises(ValueError, match="dest_format"):
        push_image(tmp_path, "1", "127.0.0.1:1", "demo/x", dest_format="v2s1")


def test_skopeo_failure_carries_stderr(tmp_path: Path) -> None:
    require_skopeo()
    with pytest.raises(PushError, match="failed") as info:
        inspect_raw(f"oci:{tmp_path / 'missing'}:1")
    assert "index.json" in str(info.value)

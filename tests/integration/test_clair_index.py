"""The scanner's Clair client and layer URLs against the devstack's real Clair v4.9, S3 server and proxy registry
(no Kafka): each test indexes an image whose base layer Clair has never seen, so Clair must fetch it through
the URL the scanner gives it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layerfill.config.routes import Route
from layerfill.config.settings import Settings
from layerfill.consumers.scanner.clair import ClairClient
from layerfill.consumers.scanner.layers import LayerLocator
from layerfill.consumers.scanner.request import index_request
from layerfill.consumers.scanner.scan import ManifestScanner
from layerfill.devstack.services.clair_feed import CVE, FIXED_VERSION
from layerfill.oci import mediatypes as mt
from layerfill.sinks.layout import blob_data_key
from layerfill.sinks.s3client import make_minio
from layerfill.state import ScanState
from layerfill.testimages import debian
from layerfill.testimages.catalog import AMD64
from layerfill.testimages.layout import ImageRecord, OciLayout
from layerfill.testimages.push import push_image
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration

PACKAGES = {"base-files", "libc6", "zlib1g", "openssl"}


@dataclass
class Built:
    layout: OciLayout
    image: ImageRecord

    def cached_manifest(self) -> dict[str, Any]:
        """The image as an ImageCached event lists it."""
        return {
            "digest": self.image.manifest.digest,
            "media_type": mt.OCI_MANIFEST,
            "platform": None,
            "config": {"digest": self.image.config.digest, "size": self.image.config.size, "media_type": mt.OCI_CONFIG},
            "layers": [{"digest": layer.digest, "size": layer.size, "media_type": mt.OCI_LAYER_GZIP}
                       for layer in self.image.layers],
        }  # fmt: skip


def build_image(workdir: Path) -> Built:
    layout = OciLayout(workdir / "layout")
    files = debian.rootfs_files()
    files["etc/layerfill-test-id"] = f"{uuid.uuid4()}\n".encode()
    base = layout.add_layer(files)
    app = layout.add_layer({"opt/app/id": f"{uuid.uuid4()}\n".encode()})
    image = layout.add_image([base, app], AMD64)
    layout.tag("1", image.manifest)
    layout.save()
    return Built(layout, image)


def settings(devstack: DevStack, **updates: Any) -> Settings:
    return devstack.settings().model_copy(update=updates)


@pytest.fixture
def s3_root(devstack: DevStack) -> Any:
    """A storage root of its own in the shared bucket, removed afterwards."""
    root = f"/lf-it-{uuid.uuid4().hex[:10]}"
    s3 = devstack.settings().s3
    client = make_minio(s3)
    yield root
    prefix = root.strip("/") + "/"
    for obj in client.list_objects(s3.bucket, prefix=prefix, recursive=True):
        client.remove_object(s3.bucket, obj.object_name)


def test_presigned_layers_are_indexed_and_matched(devstack: DevStack, s3_root: str, tmp_path: Path) -> None:
    built = build_image(tmp_path)
    base = settings(devstack)
    cfg = settings(
        devstack,
        s3=base.s3.model_copy(update={"root_directory": s3_root}),
        routes=[Route(registry="cache.test:5000", upstream_url="http://unused.test", sink="distribution")],
    )
    minio = make_minio(cfg.s3)
    for layer in built.image.layers:
        key = blob_data_key(s3_root, layer.digest)
        minio.fput_object(cfg.s3.bucket, key, str(built.layout.blobs.path(layer.digest)))
    locator = LayerLocator(cfg)
    clair = ClairClient(cfg.scanner.clair_url)
    result = ManifestScanner(clair, locator).scan(
        locator.route("cache.test:5000", "x/y"), "x/y", built.cached_manifest()
    )
    assert result.state is ScanState.INDEXED and result.packages == len(PACKAGES), result
    assert result.vulnerability_names == (CVE,) and result.vulnerabilities["unknown"] == 1
    assert result.scanner_version == clair.index_state()
    report = clair.vulnerability_report(built.image.manifest.digest)
    assert report is not None
    [vuln] = report["vulnerabilities"].values()
    assert (vuln["name"], vuln["package"]["name"], vuln["fixed_in_version"]) == (CVE, "openssl", FIXED_VERSION)


def test_registry_sink_layers_are_fetched_through_the_proxy(devstack: DevStack, tmp_path: Path) -> None:
    built = build_image(tmp_path)
    repo = f"{unique('clr')}/app"
    push_image(built.layout.root, "1", devstack.upstream_registry, repo)
    cfg = settings(
        devstack,
        routes=[Route(registry=devstack.proxy_registry, upstream_url=f"http://{devstack.upstream_registry}",
                      sink="registry", proxy_url=f"http://{devstack.proxy_registry}")],
    )  # fmt: skip
    locator = LayerLocator(cfg)
    route = locator.route(devstack.proxy_registry, repo)
    clair = ClairClient(cfg.scanner.clair_url)
    result = ManifestScanner(clair, locator).scan(route, repo, built.cached_manifest())
    assert result.state is ScanState.INDEXED and result.packages == len(PACKAGES), result
    index = clair.index_report(built.image.manifest.digest)
    assert index is not None and {p["name"] for p in index["packages"].values()} == PACKAGES


def test_a_layer_clair_cannot_fetch_ends_in_index_error_with_clairs_message(
    devstack: DevStack, s3_root: str, tmp_path: Path
) -> None:
    """Nothing uploaded: S3 answers 404 to Clair, whose POST then answers 500 and stores an IndexError report,
    which the client reads back (the 5xx path of ClairClient.index)."""
    built = build_image(tmp_path)
    base = settings(devstack)
    cfg = settings(
        devstack,
        s3=base.s3.model_copy(update={"root_directory": s3_root}),
        routes=[Route(registry="cache.test:5000", upstream_url="http://unused.test", sink="distribution")],
    )
    locator = LayerLocator(cfg)
    route = locator.route("cache.test:5000", "x/y")
    layers = [(layer.digest, locator.locate(route, "x/y", layer.digest)) for layer in built.image.layers]
    out = ClairClient(cfg.scanner.clair_url).index(index_request(built.image.manifest.digest, layers))
    assert out.summary.state == "IndexError"
    assert out.summary.error is not None and "404" in out.summary.error and "NoSuchKey" in out.summary.error

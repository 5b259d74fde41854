"""What the scanner sends Clair, and what it refuses to send (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from layerfill.consumers.scanner.request import LayerSource, index_request, unsupported_reason
from layerfill.oci import mediatypes as mt
from layerfill.oci.reference import InvalidReference

pytestmark = pytest.mark.unit

M = "sha256:" + "1" * 64
C = "sha256:" + "2" * 64
L1 = "sha256:" + "3" * 64
L2 = "sha256:" + "4" * 64


def cached(config_type: str = mt.OCI_CONFIG, layers: list[str] | None = None, platform: Any = None) -> dict[str, Any]:
    types = layers if layers is not None else [mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP]
    return {
        "digest": M,
        "media_type": mt.OCI_MANIFEST,
        "platform": platform,
        "config": {"digest": C, "size": 10, "media_type": config_type},
        "layers": [{"digest": f"sha256:{i:064x}", "size": 1, "media_type": t} for i, t in enumerate(types)],
    }


def test_images_with_tar_layers_are_supported() -> None:
    assert unsupported_reason(cached()) is None
    assert unsupported_reason(cached(mt.DOCKER_CONFIG, [mt.OCI_LAYER_ZSTD, mt.OCI_LAYER])) is None
    assert unsupported_reason(cached(platform={"os": "linux", "architecture": "arm64", "variant": "v8"})) is None


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (cached("application/vnd.cncf.helm.config.v1+json"), "is not a container image config"),
        (cached(layers=[]), "no layers"),
        (cached(platform={"os": "windows", "architecture": "amd64", "variant": None}), "windows/amd64 is not Linux"),
        (cached(layers=[mt.OCI_LAYER_GZIP, "application/vnd.cncf.helm.chart.content.v1.tar+gzip"]), "not a tar layer"),
        (cached(layers=[mt.DOCKER_LAYER_FOREIGN_GZIP]), "foreign"),
    ],
)
def test_what_clair_cannot_index_is_named(manifest: dict[str, Any], reason: str) -> None:
    got = unsupported_reason(manifest)
    assert got is not None and reason in got


def test_media_type_parameters_do_not_matter() -> None:
    assert unsupported_reason(cached(f"{mt.OCI_CONFIG}; charset=utf-8")) is None


def test_index_request_keeps_layer_order_and_headers() -> None:
    body = index_request(
        M,
        [
            (L1, LayerSource("http://s3/a?sig=1")),
            (L2, LayerSource("http://proxy/v2/r/blobs/" + L2, {"Authorization": ("Basic eA==",)})),
        ],
    )
    assert body == {
        "hash": M,
        "layers": [
            {"hash": L1, "uri": "http://s3/a?sig=1", "headers": {}},
            {"hash": L2, "uri": "http://proxy/v2/r/blobs/" + L2, "headers": {"Authorization": ["Basic eA=="]}},
        ],
    }


def test_index_request_refuses_a_bad_digest_naming_the_field() -> None:
    with pytest.raises(InvalidReference, match="layer digest"):
        index_request(M, [("sha256:nothex", LayerSource("http://x"))])
    with pytest.raises(InvalidReference, match="manifest digest"):
        index_request("md5:00", [(L1, LayerSource("http://x"))])

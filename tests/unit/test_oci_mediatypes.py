import pytest

from layerfill.oci import mediatypes as mt

pytestmark = pytest.mark.unit


def test_accept_lists_every_manifest_and_index_type() -> None:
    accepted = {part.strip() for part in mt.ACCEPT_MANIFESTS.split(",")}
    assert accepted == mt.MANIFEST_TYPES | mt.INDEX_TYPES
    assert not accepted & mt.SCHEMA1_TYPES


def test_sets_are_disjoint() -> None:
    assert not mt.MANIFEST_TYPES & mt.INDEX_TYPES
    assert mt.FOREIGN_LAYER_TYPES <= mt.LAYER_TYPES
    assert not mt.LAYER_TYPES & (mt.MANIFEST_TYPES | mt.INDEX_TYPES | mt.CONFIG_TYPES)


@pytest.mark.parametrize(
    ("value", "manifest", "index", "foreign"),
    [
        (mt.OCI_MANIFEST, True, False, False),
        (mt.DOCKER_MANIFEST + "; charset=utf-8", True, False, False),
        (mt.OCI_INDEX, False, True, False),
        (mt.DOCKER_MANIFEST_LIST.upper(), False, True, False),
        (mt.DOCKER_LAYER_FOREIGN_GZIP, False, False, True),
        (mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD, False, False, True),
        (mt.OCI_LAYER_GZIP, False, False, False),
        (None, False, False, False),
        ("", False, False, False),
    ],
)
def test_classifiers(value: str | None, manifest: bool, index: bool, foreign: bool) -> None:
    assert mt.is_manifest(value) is manifest
    assert mt.is_index(value) is index
    assert mt.is_foreign_layer(value) is foreign


def test_base_type_strips_parameters() -> None:
    assert mt.base_type(" Application/JSON ; charset=utf-8") == "application/json"
    assert mt.base_type(None) == ""

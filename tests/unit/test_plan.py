from typing import Any

import pytest

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import Descriptor, ImageIndex, ImageManifest, Platform
from layerfill.oci.plan import (
    ATTESTATION_SUBJECT_ANNOTATION,
    ATTESTATION_TYPE,
    ATTESTATION_TYPE_ANNOTATION,
    BlobItem,
    PlanError,
    PlatformPolicy,
    Skipped,
    SkipReason,
    is_attestation,
    plan_image,
    plan_index,
)

pytestmark = pytest.mark.unit


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


def child(n: int, platform: str | None, media_type: str = mt.OCI_MANIFEST, **kw: Any) -> Descriptor:
    return Descriptor(media_type, dg(n), 1000 + n, platform=Platform.parse(platform) if platform else None, **kw)


def attestation(n: int, subject: int | None) -> Descriptor:
    annotations = {ATTESTATION_TYPE_ANNOTATION: ATTESTATION_TYPE}
    if subject is not None:
        annotations[ATTESTATION_SUBJECT_ANNOTATION] = dg(subject)
    return child(n, "unknown/unknown", annotations=annotations)


# A BuildKit-style multi-platform index: two images, each with its attestation manifest.
BUILDKIT = ImageIndex(
    mt.OCI_INDEX,
    (
        child(1, "linux/amd64"),
        child(2, "linux/arm64/v8"),
        attestation(3, subject=1),
        attestation(4, subject=2),
    ),
)
DOCKER_LIST = ImageIndex(
    mt.DOCKER_MANIFEST_LIST,
    (
        child(1, "linux/amd64", mt.DOCKER_MANIFEST),
        child(2, "linux/arm/v7", mt.DOCKER_MANIFEST),
        child(3, "linux/arm/v6", mt.DOCKER_MANIFEST),
        child(4, "linux/arm64", mt.DOCKER_MANIFEST),
        child(5, "linux/386", mt.DOCKER_MANIFEST),
        child(6, "windows/amd64", mt.DOCKER_MANIFEST),
    ),
)


def digests(descriptors: list[Descriptor]) -> list[int]:
    return [int(d.digest.split(":")[1], 16) for d in descriptors]


@pytest.mark.parametrize(
    ("index", "platforms", "attestations", "kept", "excluded"),
    [
        (BUILDKIT, None, True, [1, 2, 3, 4], []),
        (BUILDKIT, None, False, [1, 2], [3, 4]),
        (BUILDKIT, ["linux/amd64"], True, [1, 3], [2, 4]),
        (BUILDKIT, ["linux/amd64"], False, [1], [2, 3, 4]),
        (BUILDKIT, ["linux/arm64"], True, [2, 4], [1, 3]),
        (BUILDKIT, ["linux/arm64/v8"], True, [2, 4], [1, 3]),
        (BUILDKIT, ["linux/arm64/v9"], True, [], [1, 2, 3, 4]),
        (BUILDKIT, ["linux/riscv64"], True, [], [1, 2, 3, 4]),
        (BUILDKIT, ["all"], True, [1, 2, 3, 4], []),
        (BUILDKIT, [], True, [1, 2, 3, 4], []),
        (DOCKER_LIST, None, True, [1, 2, 3, 4, 5, 6], []),
        (DOCKER_LIST, ["linux/amd64", "linux/arm64"], True, [1, 4], [2, 3, 5, 6]),
        (DOCKER_LIST, ["linux/arm"], True, [2, 3], [1, 4, 5, 6]),
        (DOCKER_LIST, ["linux/arm/v7"], True, [2], [1, 3, 4, 5, 6]),
        (DOCKER_LIST, ["linux/arm64/v8"], True, [4], [1, 2, 3, 5, 6]),
        (DOCKER_LIST, ["linux/x86_64"], True, [1], [2, 3, 4, 5, 6]),
        (DOCKER_LIST, ["Windows/AMD64"], True, [6], [1, 2, 3, 4, 5]),
    ],
)
def test_plan_index_policy(
    index: ImageIndex,
    platforms: list[str] | None,
    attestations: bool,
    kept: list[int],
    excluded: list[int],
) -> None:
    policy = PlatformPolicy.parse(platforms, attestations=attestations)
    children, skipped = plan_index(index, policy, dg(99))
    assert digests(children) == kept
    assert [int(s.digest.split(":")[1], 16) for s in skipped] == excluded
    assert all(s.reason is SkipReason.PLATFORM_EXCLUDED for s in skipped)
    assert all(s.manifest_digest == dg(99) for s in skipped)


def test_default_policy_keeps_everything() -> None:
    children, skipped = plan_index(BUILDKIT)
    assert children == list(BUILDKIT.manifests)
    assert skipped == []


def test_skipped_records_platform_media_type_and_size() -> None:
    _, skipped = plan_index(DOCKER_LIST, PlatformPolicy.parse(["linux/amd64"]), dg(99))
    assert skipped[0] == Skipped(dg(2), SkipReason.PLATFORM_EXCLUDED, mt.DOCKER_MANIFEST, 1002, dg(99), "linux/arm/v7")


@pytest.mark.parametrize(
    ("entries", "platforms", "kept"),
    [
        # No platform at all: nothing to judge by, so kept even under a filter.
        ((child(1, None), child(2, "linux/s390x")), ["linux/amd64"], [1]),
        # unknown/unknown without annotations is still treated as an attestation.
        ((child(1, "linux/amd64"), child(2, "unknown/unknown")), ["linux/amd64"], [1, 2]),
        # Attestation whose subject is not in the index: kept while attestations are.
        ((child(1, "linux/amd64"), attestation(2, subject=77)), ["linux/amd64"], [1, 2]),
        # Attestation listed before its subject still follows the subject's fate.
        ((attestation(2, subject=1), child(1, "linux/arm64")), ["linux/amd64"], []),
        ((attestation(2, subject=1), child(1, "linux/amd64")), ["linux/amd64"], [2, 1]),
    ],
)
def test_plan_index_edge_cases(entries: tuple[Descriptor, ...], platforms: list[str], kept: list[int]) -> None:
    children, _ = plan_index(ImageIndex(mt.OCI_INDEX, entries), PlatformPolicy.parse(platforms))
    assert digests(children) == kept


def test_nested_index_child_is_returned_for_fetching() -> None:
    index = ImageIndex(mt.OCI_INDEX, (child(1, None, mt.OCI_INDEX), child(2, "linux/amd64")))
    children, skipped = plan_index(index)
    assert digests(children) == [1, 2]
    assert skipped == []


def test_unsupported_child_media_type_is_skipped() -> None:
    index = ImageIndex(
        mt.OCI_INDEX,
        (child(1, "linux/amd64"), child(2, None, "application/vnd.example.thing.v1+json")),
    )
    children, skipped = plan_index(index, index_digest=dg(9))
    assert digests(children) == [1]
    assert [(s.digest, s.reason) for s in skipped] == [(dg(2), SkipReason.UNSUPPORTED_MEDIA_TYPE)]


def test_duplicate_children_are_listed_once() -> None:
    index = ImageIndex(mt.OCI_INDEX, (child(1, "linux/amd64"), child(1, "linux/amd64"), child(2, None)))
    children, _ = plan_index(index)
    assert digests(children) == [1, 2]


def test_duplicate_child_with_other_size_is_an_error() -> None:
    bad = Descriptor(mt.OCI_MANIFEST, dg(1), 5)
    with pytest.raises(PlanError, match="sizes"):
        plan_index(ImageIndex(mt.OCI_INDEX, (child(1, "linux/amd64"), bad)))


def test_index_listing_itself_is_an_error() -> None:
    index = ImageIndex(mt.OCI_INDEX, (child(1, "linux/amd64"), child(7, None, mt.OCI_INDEX)))
    with pytest.raises(PlanError, match="itself"):
        plan_index(index, index_digest=dg(7))


def test_is_attestation() -> None:
    assert is_attestation(attestation(1, 2))
    assert is_attestation(child(1, "unknown/unknown"))
    assert not is_attestation(child(1, "linux/amd64"))
    assert not is_attestation(child(1, None))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, PlatformPolicy(None)),
        (["all"], PlatformPolicy(None)),
        ([" ", ""], PlatformPolicy(None)),
        (["linux/amd64"], PlatformPolicy((Platform("linux", "amd64"),))),
        (["linux/arm/v7"], PlatformPolicy((Platform("linux", "arm", "v7"),))),
    ],
)
def test_policy_parse(value: list[str] | None, expected: PlatformPolicy) -> None:
    assert PlatformPolicy.parse(value) == expected


def test_policy_parse_rejects_bad_platform() -> None:
    with pytest.raises(ValueError, match="os/architecture"):
        PlatformPolicy.parse(["amd64"])


# --- plan_image -------------------------------------------------------------------------------------


def layer(n: int, media_type: str = mt.OCI_LAYER_GZIP, size: int | None = None, **kw: Any) -> Descriptor:
    return Descriptor(media_type, dg(n), size if size is not None else 10 * n, **kw)


CONFIG = Descriptor(mt.OCI_CONFIG, dg(100), 321)
M = dg(500)


@pytest.mark.parametrize(
    ("layers", "fetched", "foreign"),
    [
        ((layer(1), layer(2)), [1, 2], []),
        ((), [], []),
        ((layer(1, mt.OCI_LAYER_ZSTD), layer(2, mt.OCI_LAYER)), [1, 2], []),
        ((layer(1, mt.DOCKER_LAYER_GZIP), layer(2, mt.DOCKER_LAYER_FOREIGN_GZIP)), [1], [2]),
        ((layer(1, mt.OCI_LAYER_NONDISTRIBUTABLE), layer(2)), [2], [1]),
        ((layer(1, mt.OCI_LAYER_NONDISTRIBUTABLE_GZIP), layer(2, mt.OCI_LAYER_NONDISTRIBUTABLE_ZSTD)), [], [1, 2]),
        # A distributable media type with urls is still served from elsewhere.
        ((layer(1, urls=("https://mirror.invalid/l",)), layer(2)), [2], [1]),
        # A layer repeated in one manifest is fetched once.
        ((layer(1), layer(2), layer(1)), [1, 2], []),
        # Order is the manifest's.
        ((layer(3), layer(1), layer(2)), [3, 1, 2], []),
    ],
)
def test_plan_image(layers: tuple[Descriptor, ...], fetched: list[int], foreign: list[int]) -> None:
    plan = plan_image(ImageManifest(mt.OCI_MANIFEST, CONFIG, layers), M)
    assert plan.manifest_digest == M
    assert plan.config == BlobItem(dg(100), 321, mt.OCI_CONFIG, "config", M)
    assert [b.digest for b in plan.layers] == [dg(n) for n in fetched]
    assert all(b.kind == "layer" and b.manifest_digest == M for b in plan.layers)
    assert [s.digest for s in plan.skipped] == [dg(n) for n in foreign]
    assert all(s.reason is SkipReason.FOREIGN_LAYER and s.manifest_digest == M for s in plan.skipped)
    assert plan.blobs() == [plan.config, *plan.layers]


def test_plan_image_layer_fields() -> None:
    plan = plan_image(ImageManifest(mt.DOCKER_MANIFEST, CONFIG, (layer(7, mt.DOCKER_LAYER_GZIP, 77),)), M)
    assert plan.layers == (BlobItem(dg(7), 77, mt.DOCKER_LAYER_GZIP, "layer", M),)


def test_plan_image_conflicting_sizes_is_an_error() -> None:
    with pytest.raises(PlanError, match="sizes 10 and 11"):
        plan_image(ImageManifest(mt.OCI_MANIFEST, CONFIG, (layer(1, size=10), layer(1, size=11))), M)

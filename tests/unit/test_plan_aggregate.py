import pytest

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import Descriptor, ImageIndex, ImageManifest, Platform
from layerfill.oci.plan import (
    ATTESTATION_TYPE,
    ATTESTATION_TYPE_ANNOTATION,
    Plan,
    PlanError,
    PlatformPolicy,
    SkipReason,
)

pytestmark = pytest.mark.unit


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


def ref(n: int, platform: str | None = None, media_type: str = mt.OCI_MANIFEST, **kw: object) -> Descriptor:
    return Descriptor(media_type, dg(n), 1000 + n, platform=Platform.parse(platform) if platform else None, **kw)  # type: ignore[arg-type]


def blob(n: int, media_type: str = mt.OCI_LAYER_GZIP, size: int | None = None, **kw: object) -> Descriptor:
    return Descriptor(media_type, dg(n), size if size is not None else 10 * n, **kw)  # type: ignore[arg-type]


def image(config: int, *layers: int | Descriptor) -> ImageManifest:
    return ImageManifest(
        mt.OCI_MANIFEST,
        blob(config, mt.OCI_CONFIG),
        tuple(x if isinstance(x, Descriptor) else blob(x) for x in layers),
    )


def index(*children: Descriptor, media_type: str = mt.OCI_INDEX) -> ImageIndex:
    return ImageIndex(media_type, children)


ROOT = dg(900)


def test_single_image_root() -> None:
    plan = Plan(ROOT, 555)
    new = plan.add_image(ROOT, image(1, 2, 3))
    assert [b.digest for b in new] == [dg(1), dg(2), dg(3)]
    assert [b.kind for b in new] == ["config", "layer", "layer"]
    assert plan.complete
    root = plan.root
    assert root is not None and root.kind == "image" and root.size == 555 and root.depth == 0
    assert root.platform is None and root.parent is None
    assert plan.child_manifests == []
    assert plan.blob_bytes == 10 + 20 + 30
    assert plan.total_bytes == 555 + 60


def test_multi_platform_index_dedupes_shared_blobs() -> None:
    plan = Plan(ROOT, 700)
    to_fetch = plan.add_index(ROOT, index(ref(1, "linux/amd64"), ref(2, "linux/arm64")))
    assert [d.digest for d in to_fetch] == [dg(1), dg(2)]
    assert not plan.complete
    assert [d.digest for d in plan.pending] == [dg(1), dg(2)]

    # Both platforms share base layer 50; each has its own config and top layer.
    first = plan.add_image(dg(1), image(11, 50, 51))
    second = plan.add_image(dg(2), image(12, 50, 52))
    assert [b.digest for b in first] == [dg(11), dg(50), dg(51)]
    assert [b.digest for b in second] == [dg(12), dg(52)]
    assert plan.complete and plan.pending == []

    assert [b.digest for b in plan.blobs] == [dg(11), dg(50), dg(51), dg(12), dg(52)]
    assert plan.manifests_using(dg(50)) == [dg(1), dg(2)]
    assert plan.manifests_using(dg(51)) == [dg(1)]
    assert plan.manifests_using(dg(404)) == []

    # Reported under each manifest, with that manifest's digest.
    by_digest = {m.digest: m for m in plan.manifests}
    arm = by_digest[dg(2)]
    assert [b.digest for b in arm.layers] == [dg(50), dg(52)]
    assert all(b.manifest_digest == dg(2) for b in arm.layers)
    assert arm.platform == Platform("linux", "arm64") and arm.depth == 1 and arm.parent == ROOT
    assert arm.size == 1002 and arm.media_type == mt.OCI_MANIFEST
    assert by_digest[ROOT].children == (dg(1), dg(2))
    assert [m.digest for m in plan.child_manifests] == [dg(1), dg(2)]

    blob_bytes = 110 + 500 + 510 + 120 + 520
    assert plan.blob_bytes == blob_bytes
    assert plan.manifest_bytes == 700 + 1001 + 1002
    assert plan.total_bytes == blob_bytes + 700 + 1001 + 1002


def test_policy_and_foreign_layers_are_reported_as_skipped() -> None:
    plan = Plan(ROOT, 1, policy=PlatformPolicy.parse(["linux/amd64"], attestations=False))
    att = ref(3, "unknown/unknown", annotations={ATTESTATION_TYPE_ANNOTATION: ATTESTATION_TYPE})
    kids = plan.add_index(
        ROOT,
        index(
            ref(1, "linux/amd64", mt.DOCKER_MANIFEST),
            ref(2, "linux/arm64", mt.DOCKER_MANIFEST),
            att,
            media_type=mt.DOCKER_MANIFEST_LIST,
        ),
    )
    assert [k.digest for k in kids] == [dg(1)]
    foreign = blob(60, mt.DOCKER_LAYER_FOREIGN_GZIP, urls=("https://x.invalid/l",))
    new = plan.add_image(dg(1), image(11, foreign, 61))
    assert [b.digest for b in new] == [dg(11), dg(61)]
    assert [(s.digest, s.reason, s.manifest_digest) for s in plan.skipped] == [
        (dg(2), SkipReason.PLATFORM_EXCLUDED, ROOT),
        (dg(3), SkipReason.PLATFORM_EXCLUDED, ROOT),
        (dg(60), SkipReason.FOREIGN_LAYER, dg(1)),
    ]
    assert plan.complete
    assert plan.total_bytes == 1 + 1001 + 110 + 610


def test_nested_index_within_depth() -> None:
    plan = Plan(ROOT, 1)
    assert [d.digest for d in plan.add_index(ROOT, index(ref(1, None, mt.OCI_INDEX)))] == [dg(1)]
    assert [d.digest for d in plan.add_index(dg(1), index(ref(2, "linux/amd64")))] == [dg(2)]
    plan.add_image(dg(2), image(3, 4))
    assert plan.complete
    assert [(m.digest, m.depth, m.parent) for m in plan.manifests] == [
        (ROOT, 0, None),
        (dg(1), 1, ROOT),
        (dg(2), 2, dg(1)),
    ]


def test_nesting_deeper_than_two_is_an_error() -> None:
    plan = Plan(ROOT, 1)
    plan.add_index(ROOT, index(ref(1, None, mt.OCI_INDEX)))
    plan.add_index(dg(1), index(ref(2, None, mt.OCI_INDEX)))
    with pytest.raises(PlanError, match="nested 3 levels"):
        plan.add_index(dg(2), index(ref(3)))
    # The failed index stays pending: nothing half-recorded.
    assert [d.digest for d in plan.pending] == [dg(2)]


def test_max_depth_is_configurable() -> None:
    plan = Plan(ROOT, 1, max_index_depth=1)
    plan.add_index(ROOT, index(ref(1, None, mt.OCI_INDEX)))
    with pytest.raises(PlanError, match="nested 2 levels"):
        plan.add_index(dg(1), index(ref(2)))


def test_index_referencing_itself() -> None:
    with pytest.raises(PlanError, match="itself"):
        Plan(ROOT, 1).add_index(ROOT, index(ref(1), Descriptor(mt.OCI_INDEX, ROOT, 1)))


def test_index_referencing_its_ancestor() -> None:
    plan = Plan(ROOT, 1)
    plan.add_index(ROOT, index(ref(1, None, mt.OCI_INDEX)))
    with pytest.raises(PlanError, match="ancestor"):
        plan.add_index(dg(1), index(Descriptor(mt.OCI_INDEX, ROOT, 1)))


def test_child_shared_by_two_nested_indexes_is_fetched_once() -> None:
    plan = Plan(ROOT, 1)
    plan.add_index(ROOT, index(ref(1, None, mt.OCI_INDEX), ref(2, None, mt.OCI_INDEX)))
    assert [d.digest for d in plan.add_index(dg(1), index(ref(5, "linux/amd64")))] == [dg(5)]
    assert plan.add_index(dg(2), index(ref(5, "linux/amd64"))) == []
    plan.add_image(dg(5), image(6))
    assert plan.complete


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([("image", 77)], "neither the root nor a pending child"),
        ([("image", 900), ("image", 900)], "already planned"),
    ],
)
def test_unexpected_manifests(steps: list[tuple[str, int]], message: str) -> None:
    plan = Plan(ROOT, 1)
    with pytest.raises(PlanError, match=message):
        for _, n in steps:
            plan.add_image(dg(n), image(1))


def test_kind_must_match_the_parent_descriptor() -> None:
    plan = Plan(ROOT, 1)
    plan.add_index(ROOT, index(ref(1, "linux/amd64"), ref(2, None, mt.OCI_INDEX)))
    with pytest.raises(PlanError, match="is an index"):
        plan.add_index(dg(1), index())
    with pytest.raises(PlanError, match="is an image"):
        plan.add_image(dg(2), image(3))
    assert {d.digest for d in plan.pending} == {dg(1), dg(2)}


def test_blob_with_conflicting_sizes_across_platforms() -> None:
    plan = Plan(ROOT, 1)
    plan.add_index(ROOT, index(ref(1, "linux/amd64"), ref(2, "linux/arm64")))
    plan.add_image(dg(1), image(11, blob(50, size=500)))
    with pytest.raises(PlanError, match="sizes 500 and 501"):
        plan.add_image(dg(2), image(12, blob(50, size=501)))
    assert [d.digest for d in plan.pending] == [dg(2)]
    assert [b.digest for b in plan.blobs] == [dg(11), dg(50)]


def test_config_shared_between_platforms() -> None:
    plan = Plan(ROOT, 1)
    plan.add_index(ROOT, index(ref(1, "linux/amd64"), ref(2, "linux/arm64")))
    plan.add_image(dg(1), image(11, 50))
    assert plan.add_image(dg(2), image(11, 51))[0].digest == dg(51)
    assert plan.manifests_using(dg(11)) == [dg(1), dg(2)]


def test_empty_index_is_complete() -> None:
    plan = Plan(ROOT, 40)
    assert plan.add_index(ROOT, index()) == []
    assert plan.complete and plan.total_bytes == 40 and plan.blobs == []


def test_root_not_yet_added() -> None:
    plan = Plan(ROOT, 1)
    assert plan.root is None and not plan.complete and plan.pending == [] and plan.manifests == []

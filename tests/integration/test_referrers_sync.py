"""ReferrerSync against the devstack: the real upstream (CNCF distribution, no referrers API), real cosign and oras
artifacts, the real S3 distribution sink. A second check of an unchanged image costs HEADs and no GET."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfill.oci.referrers import ReferrerPolicy, cosign_tag, tag_schema_tag
from layerfill.remote.client import RegistryClient
from layerfill.sinks.distribution import DistributionSink
from tests.support.images import PushedImage, push_random_image
from tests.support.stack import DevStack, unique
from tests.support.supplychain import Signer, sbom_document

pytestmark = pytest.mark.integration


@pytest.fixture
def signed(devstack: DevStack, tmp_path: Path) -> tuple[PushedImage, Signer]:
    repo = f"{unique('refsync')}/app"
    image = push_random_image(devstack.upstream_registry, repo, tmp_path / "img", 16 * 1024)
    signer = Signer(tmp_path / "keys")
    ref = f"{devstack.upstream_registry}/{repo}@{image.digest}"
    assert signer.sign(ref).returncode == 0
    assert signer.attach_sbom(ref, sbom_document(repo)).returncode == 0
    return image, signer


def test_first_check_copies_and_tags_then_an_unchanged_image_costs_only_heads(devstack: DevStack, signed) -> None:
    from layerfill.consumers.fetcher.referrers import ReferrerSync

    image, _ = signed
    repo = image.repository
    policy = ReferrerPolicy()
    with RegistryClient(f"http://{devstack.upstream_registry}") as client, \
            DistributionSink(devstack.settings().s3) as sink:  # fmt: skip
        first = ReferrerSync(client, sink, repo, repo, policy).run([image.digest])
        assert first.error is None
        assert (first.counts.signatures, first.counts.sboms, first.counts.skipped) == (1, 1, 0)
        assert first.memory.referrers_api is False  # distribution answers the API with 404
        tags = sink.list_tags(repo)
        for tag in (cosign_tag(image.digest, "sig"), tag_schema_tag(image.digest)):
            assert tags.get(tag) == first.memory.tags[tag].digest
        assert first.requests["GET"] >= 4  # the API probe, the .sig manifest and blob(s), the index, the SBOM

        again = ReferrerSync(client, sink, repo, repo, policy, first.memory).run([image.digest])
        assert again.error is None
        assert again.requests["GET"] == 0, again.requests
        assert again.requests["HEAD"] >= 4
        assert again.counts == first.counts
        assert again.memory == first.memory


def test_policy_follows_only_its_kinds_and_respects_its_caps(devstack: DevStack, signed) -> None:
    from layerfill.consumers.fetcher.referrers import ReferrerSync

    image, _ = signed
    repo = image.repository
    with RegistryClient(f"http://{devstack.upstream_registry}") as client, \
            DistributionSink(devstack.settings().s3) as sink:  # fmt: skip
        sboms_only = ReferrerSync(client, sink, repo, repo, ReferrerPolicy(follow=["sbom"])).run([image.digest])
        assert (sboms_only.counts.signatures, sboms_only.counts.sboms) == (0, 1)
        assert cosign_tag(image.digest, "sig") not in sboms_only.memory.tags

        one = ReferrerSync(client, sink, repo, repo, ReferrerPolicy(max_artifacts=1)).run([image.digest])
        assert one.counts.total == 1 and one.counts.skipped == 1

        tiny = ReferrerSync(client, sink, repo, repo, ReferrerPolicy(max_bytes=100)).run([image.digest])
        assert tiny.counts.total == 0 and tiny.counts.skipped == 2

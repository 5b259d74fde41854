from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from layerfill.cli.status import format_referrers
from layerfill.oci.referrers import Counts, KnownArtifact, KnownTag, Memory
from layerfill.state.referrer_checks import ReferrerChecks
from layerfill.state.store import StateStore

pytestmark = pytest.mark.unit

IMAGE = ("cache:5000", "team/app", "sha256:" + "ab" * 32)
SIG = "sha256:" + "cd" * 32


def test_a_check_is_recorded_replaced_and_summed(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 2, 12, 0, tzinfo=UTC)]
    with StateStore(f"sqlite:///{tmp_path / 's.db'}", clock=lambda: now[0]) as store:
        checks = ReferrerChecks(store)
        assert checks.get(*IMAGE) is None
        assert checks.totals() == {"images_checked": 0, "images_signed": 0, "signatures": 0, "attestations": 0,
                                   "sboms": 0, "other": 0, "bytes": 0}  # fmt: skip
        memory = Memory(False, {"sha256-x.sig": KnownTag(SIG, [KnownArtifact(SIG, "signature", 700)])}, [IMAGE[2]])
        checks.record(*IMAGE, memory, memory.counts())
        row = checks.get(*IMAGE)
        assert row is not None and row.memory == memory and row.checked_at == now[0]
        assert row.counts == Counts(signatures=1, bytes=700)

        now[0] = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
        checks.record(*IMAGE, Memory(False), Counts(sboms=2, bytes=10))
        row = checks.get(*IMAGE)
        assert row is not None and row.checked_at == now[0] and row.memory == Memory(False)
        checks.record(IMAGE[0], "team/other", IMAGE[2], memory, memory.counts())
        totals = checks.totals()
        assert totals == {"images_checked": 2, "images_signed": 1, "signatures": 1, "attestations": 0, "sboms": 2,
                          "other": 0, "bytes": 710}  # fmt: skip


def test_status_shows_artifact_counts() -> None:
    assert format_referrers(None) == "-"
    assert format_referrers(Counts().to_dict()) == "none"
    assert format_referrers(Counts(signatures=2, sboms=1).to_dict()) == "2 sig, 1 sbom"

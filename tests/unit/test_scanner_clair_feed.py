"""The devstack's Clair config and local vulnerability feed: what Clair's Debian updater will read (its real input
format), and that no scanner or updater is left pointing at the network."""

from __future__ import annotations

import json
from email.parser import HeaderParser
from pathlib import Path

import pytest

from layerfill.devstack.context import StackContext
from layerfill.devstack.paths import Paths
from layerfill.devstack.services.clair import Clair
from layerfill.devstack.services.clair_feed import CODENAME, CVE, FIXED_VERSION, JSON_PATH, VulnFeed

pytestmark = pytest.mark.unit


@pytest.fixture
def ctx(tmp_path: Path) -> StackContext:
    c = StackContext(paths=Paths(cache=tmp_path / "cache", state=tmp_path / "state"))
    c.paths.ensure()
    return c


def test_clair_runs_only_the_debian_updater_against_the_local_feed(ctx: StackContext) -> None:
    clair = Clair(ctx)
    cfg = clair.config()
    assert cfg["updaters"]["sets"] == ["debian"]
    debian = cfg["updaters"]["config"]["debian"]
    assert debian["mirror_url"] == f"http://127.0.0.1:{clair.feed.port}/"  # the updater needs the trailing slash
    assert debian["json_url"] == f"http://127.0.0.1:{clair.feed.port}/{JSON_PATH}"
    scanners = cfg["indexer"]["scanner"]
    assert scanners["repo"]["rhel-repository-scanner"]["repo2cpe_mapping_file"].endswith("repo2cpe.json")
    assert scanners["package"]["rhel_containerscanner"]["name2repos_mapping_file"].endswith("name2repos.json")
    assert cfg["indexer"]["airgap"] is True


def test_feed_files_are_in_the_debian_updaters_format(ctx: StackContext) -> None:
    feed = VulnFeed(ctx)
    feed.write()
    release = HeaderParser().parsestr((feed.root / "debian" / "dists" / CODENAME / "Release").read_text())
    assert release["Codename"] == CODENAME and release["Version"].split(".")[0] == "12"
    tracker = json.loads((feed.root / JSON_PATH).read_text())
    entry = tracker["openssl"][CVE]
    assert entry["releases"][CODENAME] == {
        "status": "resolved",
        "fixed_version": FIXED_VERSION,
        "urgency": "not yet assigned",
    }
    assert entry["description"]


def test_feed_is_rewritten_only_when_it_changes(ctx: StackContext) -> None:
    # Its mtime is the Last-Modified the updater fingerprints: an unchanged feed must look unchanged.
    feed = VulnFeed(ctx)
    feed.write()
    path = feed.root / JSON_PATH
    before = path.stat().st_mtime_ns
    feed.write()
    assert path.stat().st_mtime_ns == before

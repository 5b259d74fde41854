"""A tiny, honest vulnerability source for the devstack's Clair, served on 127.0.0.1 in the real input format
of claircore's Debian updater (the one Clair v4.9 ships), so the matcher has data without reaching the network.

The Debian updater reads two URLs (claircore v1.5.48 `debian/updater.go`):
- `mirror_url`: `<mirror>/debian/dists/` must be an HTML page whose `href`s name release directories, and
  `<mirror>/debian/dists/<codename>/Release` a Release file whose `Version:` gives the major version;
- `json_url`: the security tracker's JSON (`source package -> CVE -> {description, releases: {codename:
  {status, fixed_version, urgency}}}`).
Python's `http.server` produces exactly such a directory listing and honours `If-Modified-Since`, which the
updater uses as its fingerprint.

The one entry is real: CVE-2024-0727 ("PKCS12 Decoding crashes"), fixed for bookworm in openssl
3.0.13-1~deb12u1 (Debian's openssl changelog, Closes: #1061582). The security tracker gives bookworm no
urgency for it, which its JSON writes as "not yet assigned" (Clair: severity Unknown). The test images'
base layer has openssl 3.0.11-1~deb12u2, which is older, so Clair reports it as vulnerable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..context import StackContext
from ..process import ManagedProcess
from .base import port_open

CVE = "CVE-2024-0727"
PACKAGE = "openssl"
FIXED_VERSION = "3.0.13-1~deb12u1"
CODENAME = "bookworm"

SECURITY_TRACKER: dict[str, object] = {
    PACKAGE: {
        CVE: {
            "description": (
                "Issue summary: Processing a maliciously formatted PKCS12 file may lead OpenSSL to crash "
                "leading to a potential Denial of Service attack"
            ),
            "debianbug": 1061582,
            "releases": {
                CODENAME: {"status": "resolved", "fixed_version": FIXED_VERSION, "urgency": "not yet assigned"},
            },
        }
    }
}

# The header fields of bookworm's Release file that the updater reads (it stops at the first blank line).
RELEASE = (
    "Origin: Debian\n"
    "Label: Debian\n"
    "Suite: stable\n"
    "Version: 12.5\n"
    f"Codename: {CODENAME}\n"
    "Description: Debian 12.5 Released\n"
)

JSON_PATH = "debian/security-tracker.json"


def feed_port() -> int:
    return int(os.environ.get("LAYERFILL_DEVSTACK_CLAIR_FEED_PORT", 16062))


class VulnFeed:
    """Static files under `<data>/clair-feed`, served by `python -m http.server`; started and stopped by Clair."""

    name = "clair-feed"

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self.port = feed_port()
        self.root = ctx.paths.data / "clair-feed"
        self.process = ManagedProcess(self.name, ctx.paths.run, ctx.paths.logs)

    @property
    def mirror_url(self) -> str:
        return f"http://{self.ctx.host}:{self.port}/"

    @property
    def json_url(self) -> str:
        return f"{self.mirror_url}{JSON_PATH}"

    def updater_config(self) -> dict[str, str]:
        """The `updaters.config.debian` block of Clair's config."""
        return {"mirror_url": self.mirror_url, "json_url": self.json_url}

    def write(self) -> None:
        release = self.root / "debian" / "dists" / CODENAME / "Release"
        release.parent.mkdir(parents=True, exist_ok=True)
        _write_if_changed(release, RELEASE)
        # Rewritten only when the content changes: its mtime is the Last-Modified the updater fingerprints.
        _write_if_changed(self.root / JSON_PATH, json.dumps(SECURITY_TRACKER, indent=2, sort_keys=True) + "\n")

    def start(self) -> None:
        self.write()
        argv = [sys.executable, "-m", "http.server", str(self.port), "--bind", self.ctx.host]
        self.process.start(argv, env={"PATH": "/usr/bin:/bin"}, cwd=self.root)

    def healthy(self) -> bool:
        return port_open(self.ctx.host, self.port)

    def stop(self) -> bool:
        return self.process.stop()


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)

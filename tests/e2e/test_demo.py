"""`layerfill demo` (what `make demo` runs) on the real stack, as a user sees it: both seed scenarios in its output,
and the blob table on lines of its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.stack import DevStack

pytestmark = pytest.mark.e2e


def test_demo_shows_both_scenarios(devstack: DevStack) -> None:
    env = dict(os.environ, LAYERFILL_ENV_FILE=str(devstack.ctx.paths.env_file), COLUMNS="200")
    env.pop("LAYERFILL_STATE__DATABASE_URL", None)  # the demo uses the devstack's state DB, as `make demo` does
    res = subprocess.run([sys.executable, "-m", "layerfill.cli.main", "demo"], env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    out = res.stdout
    assert res.returncode == 0, out[-4000:] + res.stderr[-4000:]
    lines = out.splitlines()
    repo_b = re.search(r"(run-[0-9a-f]{6}/demo/app-b)", out).group(1)  # type: ignore[union-attr]

    # B complete: the final table, then the verdict on a line of its own (they used to run together).
    done = next(i for i, ln in enumerate(lines) if ln.startswith(f"{repo_b}:1 is complete in the cache"))
    assert lines[done - 1].startswith("└") and lines[done - 1].endswith("┘")
    assert sum(1 for ln in lines[:done] if "│ yes" in ln) >= 3  # config and both layers linked in B

    # Scenario 1: Clair's own reports for B, with the packages of the base layer the client skipped and the CVE.
    assert "the scanner recorded: indexed, 4 packages, vulnerabilities: unknown 1" in out
    skipped = [ln for ln in lines if "base layer (the client skipped it)" in ln]
    assert sorted(ln.split("│")[1].strip() for ln in skipped) == ["base-files", "libc6", "openssl", "zlib1g"]
    cve = next(ln for ln in lines if "CVE-2024-0727" in ln)
    assert [c.strip() for c in cve.split("│")[1:-1]] == [
        "CVE-2024-0727", "openssl", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", "Unknown",
    ]  # fmt: skip

    # Scenario 2: B pulled with the upstream down.
    assert f"pulled {repo_b}:1 with the upstream down: every blob came from the cache" in out
    assert devstack.stack.upstream.healthy()  # started again afterwards

"""Run `layerfill` SRE commands as a user would, against a test Pipeline's topics, groups and state."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support.pipeline import Pipeline


def run_cli(p: Pipeline, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layerfill.cli.main", *args],
        env=p.env("cli"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_json(p: Pipeline, *args: str, expect_rc: int | tuple[int, ...] = 0) -> Any:
    res = run_cli(p, *args, "--json")
    allowed = expect_rc if isinstance(expect_rc, tuple) else (expect_rc,)
    assert res.returncode in allowed, f"layerfill {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)

"""Where the devstack keeps downloads (cache, shared across clones) and its running state (per checkout)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _repo_root() -> Path:
    # devstack/ sits at the top of the checkout; an installed (non-editable) copy falls back to the cwd.
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


@dataclass(frozen=True)
class Paths:
    cache: Path  # downloads and built binaries: survives clones, so a second `up` installs nothing
    state: Path  # data, logs, pid files and the env file of this checkout's stack

    @property
    def bin(self) -> Path:
        return self.cache / "bin"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def env_file(self) -> Path:
        return self.state / "env"

    def ensure(self) -> None:
        for p in (self.cache, self.bin, self.logs, self.run, self.data):
            p.mkdir(parents=True, exist_ok=True)


def default_paths() -> Paths:
    cache = Path(os.environ.get("LAYERFILL_CACHE", Path.home() / ".cache" / "layerfill"))
    state = Path(os.environ.get("LAYERFILL_DEVSTACK_DIR", _repo_root() / ".devstack"))
    return Paths(cache=cache.resolve(), state=state.resolve())

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_devstack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the settings they build: a running devstack's env file (schema registry URL, state DB)
    must not change what they test, or they pass on a clean checkout and fail while the stack is up."""
    monkeypatch.setenv("LAYERFILL_ENV_FILE", "none")
    for name in [n for n in os.environ if n.startswith("LAYERFILL_") and n != "LAYERFILL_ENV_FILE"]:
        monkeypatch.delenv(name)

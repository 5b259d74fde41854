from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Loaded before any test module builds its own settings, so they inherit the profile. "ci" (.ci/run) draws the
# same examples every run: a red CI is a regression, not a lucky draw. "explore", the default, draws new ones
# each run; `make faults-full` explores at full size. A failure prints the blob that reproduces it either way.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))

from tests.support.stack import DevStack  # noqa: E402


@pytest.fixture(scope="session")
def devstack() -> DevStack:
    """The real local stack (Kafka, S3, registries, PostgreSQL, Clair), brought up once per session."""
    from tests.support.stack import ensure_up

    return ensure_up()


@pytest.fixture(scope="session")
def catalog(devstack: DevStack):
    """The deterministic test-image catalog, built once (64 MiB large layer is not needed here: 8 MiB)."""
    from layerfill.devstack.seed import build

    return build(devstack.ctx, large_size=8 * 1024 * 1024)

from __future__ import annotations

import pytest

from tests.support.stack import DevStack


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

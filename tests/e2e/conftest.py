from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.stack import DevStack


@contextmanager
def upstream_stopped(devstack: DevStack) -> Iterator[None]:
    """The upstream registry down for the block, up again afterwards whatever happens."""
    devstack.stack.stop("upstream")
    try:
        yield
    finally:
        devstack.stack.start("upstream")


@pytest.fixture
def pipeline_factory(devstack: DevStack, tmp_path):
    from tests.support.pipeline import Pipeline

    made: list[Pipeline] = []

    def make(**kwargs) -> Pipeline:
        p = Pipeline(devstack, tmp_path / f"p{len(made)}", **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()

from __future__ import annotations

import pytest

from layerfill.config.routes import Route
from layerfill.consumers.fetcher.referrers import ReferrerChecker
from layerfill.serde import events
from layerfill.serde.records import ManifestPulled

pytestmark = pytest.mark.unit


def _event(registry: str = "cache:5000", digest: str = "sha256:" + "ab" * 32) -> ManifestPulled:
    return ManifestPulled.from_avro(
        events.manifest_pulled(
            event_id="e1", source="distribution", registry=registry, repository="team/app", digest=digest
        )
    )


EVENT = _event()


def _routes(**policy) -> list[Route]:
    return [Route(registry="cache:5000", upstream_url="http://up", referrers={"recheck_interval_s": 60, **policy})]


def test_a_pull_is_due_once_per_interval_and_claims_the_check() -> None:
    now = [1000.0]
    checker = ReferrerChecker(None, clock=lambda: now[0])
    routes = _routes()
    assert checker.due(routes, EVENT)  # never checked by this process
    assert not checker.due(routes, EVENT)  # claimed: a second pull in the interval does nothing
    now[0] += 59
    assert not checker.due(routes, EVENT)
    now[0] += 1
    assert checker.due(routes, EVENT)
    assert checker.due(routes, _event(digest="sha256:" + "cd" * 32))  # per image


def test_never_due_without_a_route_or_with_discovery_off() -> None:
    checker = ReferrerChecker(None, clock=lambda: 0.0)
    assert not checker.due(_routes(follow=[]), EVENT)
    assert not checker.due(_routes(), _event(registry="elsewhere:5000"))


def test_interval_zero_checks_every_pull() -> None:
    checker = ReferrerChecker(None, clock=lambda: 5.0)
    routes = _routes(recheck_interval_s=0)
    assert checker.due(routes, EVENT) and checker.due(routes, EVENT)

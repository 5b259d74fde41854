"""The wait for a client's pull in progress (consumers/fetcher/defer.py): pure decisions from observations."""

from __future__ import annotations

import pytest

from layerfill.config.routes import UpstreamCost
from layerfill.consumers.fetcher.defer import ClientWatch, Decision, Observation

pytestmark = pytest.mark.unit

POLICY = UpstreamCost(grace_s=2.0, idle_s=1.0, max_wait_s=30.0, poll_s=0.25, upload_stale_s=10.0)
A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def obs(at: float, missing: set[str], uploads: dict[str, float] | None = None) -> Observation:
    return Observation(at, frozenset(missing), uploads if uploads is not None else {})


def test_nothing_missing_is_done() -> None:
    assert ClientWatch(POLICY, 100.0, 100.0).observe(obs(100.0, set())) is Decision.DONE


def test_client_gets_the_grace_to_start_then_a_skipped_layer_is_fetched() -> None:
    w = ClientWatch(POLICY, pulled_at=100.0, started_at=100.1)
    assert w.observe(obs(100.1, {A})) is Decision.WAIT
    assert w.observe(obs(101.9, {A})) is Decision.WAIT
    assert w.observe(obs(102.0, {A})) is Decision.FETCH
    assert w.waited


def test_layers_appearing_keep_the_wait_going_until_quiet_for_idle_s() -> None:
    w = ClientWatch(POLICY, pulled_at=100.0, started_at=100.0)
    assert w.observe(obs(100.0, {A, B})) is Decision.WAIT
    assert w.observe(obs(101.8, {B})) is Decision.WAIT  # A arrived: progress at 101.8
    assert w.observe(obs(102.5, {B})) is Decision.WAIT  # grace is over, but only 0.7 s of quiet
    assert w.observe(obs(102.8, {B})) is Decision.FETCH


def test_once_the_client_has_started_its_quiet_ends_the_wait_before_the_grace() -> None:
    w = ClientWatch(POLICY, pulled_at=100.0, started_at=100.0)
    assert w.observe(obs(100.1, {A, B}, {"u": 100.05})) is Decision.WAIT  # an upload: the client is at it
    assert w.observe(obs(100.3, {B})) is Decision.WAIT  # A stored
    assert w.observe(obs(101.3, {B})) is Decision.FETCH  # 1 s of quiet, though the 2 s grace runs until 102


def test_an_open_upload_is_progress_while_fresh() -> None:
    w = ClientWatch(POLICY, pulled_at=100.0, started_at=100.0)
    for t in (100.0, 103.0, 106.0, 109.5):
        assert w.observe(obs(t, {A}, {"u1": 100.5})) is Decision.WAIT
    # started 10 s ago: stale (an abandoned pull leaves it open); quiet since the last fresh look at 109.5
    assert w.observe(obs(110.6, {A}, {"u1": 100.5})) is Decision.FETCH


def test_old_event_without_signs_of_a_pull_is_fetched_at_once() -> None:
    w = ClientWatch(POLICY, pulled_at=50.0, started_at=100.0)
    assert w.observe(obs(100.0, {A})) is Decision.FETCH
    assert not w.waited


def test_never_longer_than_max_wait() -> None:
    policy = UpstreamCost(grace_s=2.0, idle_s=1.0, max_wait_s=5.0, poll_s=0.25, upload_stale_s=1000.0)
    w = ClientWatch(policy, pulled_at=100.0, started_at=100.0)
    assert w.observe(obs(104.9, {A}, {"u": 104.0})) is Decision.WAIT
    assert w.observe(obs(105.0, {A}, {"u": 104.9})) is Decision.FETCH
    assert w.next_wait(104.9) == pytest.approx(0.1)


def test_no_visibility_waits_only_the_grace() -> None:
    w = ClientWatch(POLICY, pulled_at=100.0, started_at=100.0)
    assert w.observe(Observation(101.0, frozenset({A}), None)) is Decision.WAIT
    assert w.observe(Observation(102.0, frozenset({A}), None)) is Decision.FETCH


def test_deferral_off_fetches_at_once() -> None:
    w = ClientWatch(UpstreamCost(defer_layers=False), pulled_at=100.0, started_at=100.0)
    assert w.observe(obs(100.0, {A}, {"u": 100.0})) is Decision.FETCH


def test_policy_refuses_a_poll_longer_than_the_idle_window() -> None:
    with pytest.raises(ValueError, match="poll_s"):
        UpstreamCost(idle_s=1.0, poll_s=2.0)

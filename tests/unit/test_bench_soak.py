"""bench/soak.py's pure parts: the event mix, the RSS and lag figures over samples, the checks, the storage keys;
and bench/relay.py's fault injection against a real local upstream."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench import plots, soak
from bench.common import PushedImage
from bench.relay import Relay

pytestmark = pytest.mark.unit

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64
F = "sha256:" + "c" * 64


# -- the event mix --------------------------------------------------------------------------------------------
def test_schedule_announces_the_exact_share_evenly_and_first() -> None:
    mix = list(soak.schedule(1000, 0.05, seed=1))
    new = [i for i, (_, is_new) in enumerate(mix) if is_new]
    assert len(new) == 50 == soak.new_images(1000, 0.05)
    assert new[0] == 0
    assert [b - a for a, b in itertools.pairwise(new)] == [20] * 49
    assert [idx for idx, is_new in mix if is_new] == list(range(50))  # new images are numbered in order


def test_schedule_repeats_only_images_already_announced() -> None:
    announced = 0
    seen: Counter[int] = Counter()
    for idx, is_new in soak.schedule(20_000, 0.05, seed=7):
        if is_new:
            assert idx == announced
            announced += 1
        else:
            assert 0 <= idx < announced
            seen[idx] += 1
    assert announced == 1000
    # Uniform over the announced: the first half, announced by event 10,000, is each picked again.
    assert set(range(500)) <= set(seen)
    assert seen[0] > seen[999]


def test_schedule_is_deterministic_per_seed_and_rejects_bad_ratios() -> None:
    assert list(soak.schedule(500, 0.1, seed=3)) == list(soak.schedule(500, 0.1, seed=3))
    assert list(soak.schedule(500, 0.1, seed=3)) != list(soak.schedule(500, 0.1, seed=4))
    assert soak.new_images(10, 1.0) == 10
    assert soak.new_images(1_000_001, 0.05) == 50_001  # rounded up: the first event is always new
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            list(soak.schedule(10, bad, seed=0))


# -- figures over samples --------------------------------------------------------------------------------------
def samples(rss: list[int], lags: list[float] | None = None) -> list[dict[str, Any]]:
    """One sample per second from t=100."""
    lags = lags or [0.0] * len(rss)
    return [{"t": 100.0 + i, "rss": {"f": r}, "lag": lag} for i, (r, lag) in enumerate(zip(rss, lags, strict=True))]


def test_rss_growth_compares_last_quarter_with_just_after_warm_up() -> None:
    # 100 s: warm-up 0-10 (huge, ignored), baseline 10-20 (100), middle 150, last quarter 75-100 (110).
    rss = [1000] * 10 + [100] * 10 + [150] * 55 + [110] * 25
    got = soak.rss_growth(samples(rss), 100.0, 200.0, "f")
    assert got == {"baseline_bytes": 100, "last_quarter_bytes": 110, "growth": 0.1}


def test_rss_growth_without_samples_is_unknown() -> None:
    assert soak.rss_growth(samples([1, 2]), 100.0, 200.0, "f")["growth"] is None
    assert soak.rss_growth(samples([5] * 100), 100.0, 200.0, "other")["growth"] is None


def test_slope() -> None:
    assert soak.slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert soak.slope([(0, 5)]) == 0.0
    assert soak.slope([(1, 5), (1, 7)]) == 0.0


def test_lag_trend_leaves_out_warm_up_and_fits_the_rise() -> None:
    lags = [5000.0] * 10 + [float(i) for i in range(90)]  # a warm-up spike, then +1 event per second
    got = soak.lag_trend(samples([1] * 100, lags), 100.0, 200.0)
    assert got["samples"] == 90
    assert got["max"] == 89.0
    assert got["slope_per_s"] == pytest.approx(1.0)
    assert got["fitted_rise"] == pytest.approx(89.0)


# -- the checks -------------------------------------------------------------------------------------------------
def good(**over: Any) -> dict[str, Any]:
    new = {("r", D), ("r", E)}
    kw: dict[str, Any] = {
        "produced": 100, "expected": 100, "committed": 100, "image_cached": Counter(dict.fromkeys(new, 1)),
        "new": new, "incomplete": [], "dead_letters": 0, "retry_lag": {0: 0, 1: 1},
        "growth": {"f0": {"growth": 0.02}, "f1": {"growth": -0.01}},
        "lag": {"fitted_rise": 12.0, "max": 40.0}, "rate": 10.0, "produce_s": 100.0, "planned_s": 100.0,
        "drained": True,
    }  # fmt: skip
    kw.update(over)
    return kw


def failed(**over: Any) -> list[str]:
    return [c.name for c in soak.checks(**good(**over)) if not c.ok]


def test_checks_pass_on_a_clean_run() -> None:
    got = soak.checks(**good())
    assert all(c.ok for c in got), [c for c in got if not c.ok]
    assert len(got) == 12


def test_checks_catch_each_failure() -> None:
    assert failed(produced=99) == ["events produced", "input offsets committed"]
    assert failed(committed=99) == ["input offsets committed"]
    assert failed(produce_s=105.0) == []
    assert failed(drained=False) == ["drained (lag 0, every ImageCached) in --drain-s"]
    assert failed(produce_s=106.0) == ["steady input: producing period"]
    assert failed(retry_lag={0: 2}) == ["retry topic consumed"]
    assert failed(image_cached=Counter({("r", D): 1})) == ["new images with an ImageCached"]
    assert failed(image_cached=Counter({("r", D): 1, ("r", E): 2})) == ["ImageCached exactly once"]
    assert failed(image_cached=Counter({("r", D): 1, ("r", E): 1, ("r", F): 1})) == ["ImageCached exactly once"]
    assert failed(incomplete=[("r", D)]) == ["new images complete in storage"]
    assert failed(dead_letters=1) == ["dead letters"]
    assert failed(growth={"f0": {"growth": 0.11}}) == ["RSS growth after warm-up, f0"]
    assert failed(growth={"f0": {"growth": None}}) == ["RSS growth after warm-up, f0"]
    assert failed(lag={"fitted_rise": 51.0, "max": 60.0}) == ["lag flat (fitted rise after warm-up)"]
    assert failed(lag={"fitted_rise": 50.0, "max": 60.0}) == []  # 5 s of input at 10 events/s


def test_table_marks_failures() -> None:
    text = soak.table(soak.checks(**good(dead_letters=3)))
    assert "dead letters" in text and "FAILED" in text
    assert text.count("FAILED") == 1


# -- storage keys -------------------------------------------------------------------------------------------------
def test_incomplete_images_needs_every_blob_and_link() -> None:
    img = PushedImage("p/img-1", "i0", D, E, ((F, 10),))
    keys = soak.expected_keys("/", img)
    assert len(keys) == 6
    assert keys[0] == f"docker/registry/v2/blobs/sha256/aa/{'a' * 64}/data"
    assert f"docker/registry/v2/repositories/p/img-1/_manifests/revisions/sha256/{'a' * 64}/link" in keys
    assert f"docker/registry/v2/repositories/p/img-1/_layers/sha256/{'b' * 64}/link" in keys
    assert soak.incomplete_images("/", [img], set(keys)) == []
    for k in keys:
        assert soak.incomplete_images("/", [img], set(keys) - {k}) == [("p/img-1", D)]


# -- the plot's data ------------------------------------------------------------------------------------------------
def test_soak_series_is_minutes_from_the_start() -> None:
    doc = {"t0": 100.0, "samples": [
        {"t": 100.0, "rss": {"f0": 2**20}, "lag": 3, "produced": 0, "outputs": {"image_cached": 0}},
        {"t": 160.0, "rss": {"f0": 3 * 2**20, "f1": 2**20}, "lag": 1, "produced": 60, "outputs": {"image_cached": 2}},
    ]}  # fmt: skip
    got = plots.soak_series(doc)
    assert got["minutes"] == [0.0, 1.0]
    assert got["rss_mib"] == {"f0": [1.0, 3.0], "f1": [None, 1.0]}
    assert got["lag"] == [3, 1]
    assert got["produced"] == [0, 60]
    assert got["image_cached"] == [0, 2]


# -- the relay's faults --------------------------------------------------------------------------------------------
class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def upstream() -> Any:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _get(url: str) -> tuple[int | None, str | None]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/v2/")
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("Retry-After")
    except (ConnectionError, http.client.HTTPException):
        return None, None
    finally:
        conn.close()


def test_relay_fails_about_the_fault_ratio_and_counts_it(upstream: str) -> None:
    with Relay(upstream, fault_ratio=0.3, seed=5, keep_hits=False) as relay:
        answers = [_get(relay.url) for _ in range(300)]
        counts = relay.counts()
    assert relay.hits == []
    assert counts["requests"] == 300
    injected = counts["fault_503-retry-after-0"] + counts["fault_503-retry-after-1"] + counts["fault_reset"]
    assert 60 <= injected <= 120
    assert sum(1 for a in answers if a == (200, None)) == 300 - injected
    assert sum(1 for a in answers if a == (503, "0")) == counts["fault_503-retry-after-0"]
    assert sum(1 for a in answers if a == (503, "1")) == counts["fault_503-retry-after-1"]
    assert sum(1 for a in answers if a == (None, None)) == counts["fault_reset"] > 0


def test_relay_without_faults_passes_everything(upstream: str) -> None:
    with Relay(upstream) as relay:
        assert [_get(relay.url) for _ in range(20)] == [(200, None)] * 20
        assert relay.counts()["requests"] == 20 == len(relay.hits)
    with pytest.raises(ValueError):
        Relay(upstream, fault_ratio=1.0)


def test_soak_plot_is_drawn_from_the_kept_samples(tmp_path: Any) -> None:
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[2] / "docs" / "bench-data" / "soak.json").read_text())
    out = plots.draw_soak(doc, tmp_path / "soak.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

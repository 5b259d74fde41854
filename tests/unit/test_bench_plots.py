"""bench/plots.py's data preparation (pure) and that each plot is a PNG drawn from the kept raw samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import plots

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[2] / "docs" / "bench-data"


def test_cdf() -> None:
    assert plots.cdf([3.0, 1.0, 2.0, 2.0]) == ([1.0, 2.0, 2.0, 3.0], [0.25, 0.5, 0.75, 1.0])


def test_latency_samples_leave_out_warm_ups() -> None:
    rows = [
        {"kind": "missing", "warm_up": True, "t_answer": 0.0, "t_layer_first_byte": 9.0, "t_image_cached_seen": 9.0},
        {"kind": "missing", "warm_up": False, "t_answer": 1.0, "t_layer_first_byte": 1.05, "t_image_cached_seen": 1.3},
        {"kind": "present", "warm_up": False, "t_answer": 2.0, "t_image_cached_seen": 2.02},
    ]
    got = plots.latency_samples({"rows": rows})
    assert [round(v, 3) for v in got["missing layer: answer -> first upstream byte"]] == [50.0]
    assert [round(v, 3) for v in got["missing layer: answer -> ImageCached"]] == [300.0]
    assert [round(v, 3) for v in got["nothing missing: answer -> ImageCached"]] == [20.0]


def test_scaleout_points_and_egress_bars() -> None:
    doc = {"rounds": [{"processes": 2, "images_per_s": 6.0}, {"processes": 1, "images_per_s": 3.0,
                                                               "ratio_images_per_s_to_1": 1.0}]}  # fmt: skip
    assert plots.scaleout_points(doc) == [(1, 3.0, 1.0), (2, 6.0, 2.0)]
    names, series = plots.egress_bars(
        {
            "scenarios": [
                {
                    "name": "pull A then B",
                    "image_bytes": 10,
                    "proxy_blob_bytes": 8,
                    "layerfill_blob_bytes": 2,
                    "layerfill_manifest_gets": 1,
                }
            ]
        }
    )
    assert names == ["pull A then B"]
    assert series == {"image": [10], "proxy alone (client's pull)": [8], "layerfill (fetcher)": [2]}


def test_plots_are_drawn_from_the_kept_samples(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    egress = {"benchmark": "egress", "scenarios": [
        {"name": "a", "image_bytes": 3 << 20, "proxy_blob_bytes": 2 << 20, "layerfill_blob_bytes": 1 << 20,
         "layerfill_manifest_gets": 0}]}  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    for name in ("latency", "scaleout"):
        (data / f"{name}.json").write_text((DATA / f"{name}.json").read_text())
    (data / "egress.json").write_text(json.dumps(egress))
    plots.main(["--data", str(data), "--out", str(tmp_path / "img")])
    for name in ("latency", "scaleout", "egress"):
        assert (tmp_path / "img" / f"bench-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((DATA / "latency.json").read_text())["rows"]
    assert len([r for r in rows if not r["warm_up"]]) == 200  # raw samples kept, not only percentiles

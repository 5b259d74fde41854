"""Draw the benchmarks' raw samples (docs/bench-data/*.json) as PNGs under docs/img/, for docs/benchmarks.md.

    .venv/bin/python -m bench.plots

- latency CDF (bench/latency.py): per pull, the proxy's answer -> first upstream byte of the missing layer, and
  -> ImageCached read, for a missing layer and for nothing missing;
- scale-out curve (bench/scaleout.py): images/s per fetcher process count, against linear from one process;
- upstream bytes side by side (bench/egress.py, when docs/bench-data/egress.json exists): per scenario, the
  image's bytes, what the proxy alone and what layerfill took from the upstream;
- the soak (bench/soak.py, docs/img/soak.png): each fetcher's RSS, the input lag and the events produced and
  images cached, over the run.

The data preparation is pure (unit-tested in tests/unit/test_bench_plots.py); drawing uses matplotlib (dev extra)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "bench-data"
IMG = ROOT / "docs" / "img"

LATENCY_SERIES = {
    "missing layer: answer -> first upstream byte": ("missing", "t_answer", "t_layer_first_byte"),
    "missing layer: answer -> ImageCached": ("missing", "t_answer", "t_image_cached_seen"),
    "nothing missing: answer -> ImageCached": ("present", "t_answer", "t_image_cached_seen"),
}


def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the fraction of samples at or below each."""
    xs = sorted(values)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def latency_samples(doc: dict[str, Any]) -> dict[str, list[float]]:
    """Milliseconds per measured pull (warm-ups left out), per series; a series without samples is omitted."""
    out: dict[str, list[float]] = {}
    for label, (kind, start, end) in LATENCY_SERIES.items():
        ms = [
            (r[end] - r[start]) * 1000
            for r in doc.get("rows", [])
            if r.get("kind") == kind and not r.get("warm_up") and r.get(start) is not None and r.get(end) is not None
        ]
        if ms:
            out[label] = ms
    return out


def scaleout_points(doc: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(processes, images/s, ratio to one process as the run recorded it) per round, by process count."""
    rounds = sorted(doc.get("rounds", []), key=lambda r: int(r["processes"]))
    one = next((float(r["images_per_s"]) for r in rounds if int(r["processes"]) == 1), None)
    out = []
    for r in rounds:
        rate = float(r["images_per_s"])
        recorded = r.get("ratio_images_per_s_to_1")
        out.append((int(r["processes"]), rate, float(recorded) if recorded is not None else rate / (one or rate)))
    return out


def egress_bars(doc: dict[str, Any]) -> tuple[list[str], dict[str, list[int]]]:
    """Scenario names and, per series, bytes per scenario."""
    scenarios = doc.get("scenarios", [])
    names = [s["name"] for s in scenarios]
    series = {
        "image": [int(s["image_bytes"]) for s in scenarios],
        "proxy alone (client's pull)": [int(s["proxy_blob_bytes"]) for s in scenarios],
        "layerfill (fetcher)": [int(s["layerfill_blob_bytes"]) for s in scenarios],
    }
    return names, series


def soak_series(doc: dict[str, Any]) -> dict[str, Any]:
    """Per sample: minutes since the start, RSS MiB per fetcher (None where a sample lacks it), lag, events
    produced and ImageCached committed."""
    rows = doc.get("samples", [])
    t0 = float(doc.get("t0", rows[0]["t"] if rows else 0.0))
    names = sorted({n for r in rows for n in r.get("rss", {})})
    return {
        "minutes": [round((r["t"] - t0) / 60, 4) for r in rows],
        "rss_mib": {n: [r["rss"][n] / 2**20 if n in r.get("rss", {}) else None for r in rows] for n in names},
        "lag": [r["lag"] for r in rows],
        "produced": [r["produced"] for r in rows],
        "image_cached": [r.get("outputs", {}).get("image_cached", 0) for r in rows],
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _footer(fig: Any, doc: dict[str, Any]) -> None:
    m = doc.get("machine")
    parts = [f"{doc.get('benchmark', '')} {doc.get('at', '')}".strip()]
    if m:  # older result files (egress.json) carry no machine block: say nothing rather than "?"
        parts.append(f"{m.get('nproc', '?')} vCPU shared with the devstack · load {m.get('loadavg_1m_at_start', '?')}")
    fig.text(0.01, 0.01, " · ".join(p for p in parts if p), fontsize=7, color="#666")


def draw_latency(doc: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for label, ms in latency_samples(doc).items():
        xs, ys = cdf(ms)
        ax.step(xs, ys, where="post", label=f"{label} (n={len(ms)})")
    ax.set_xscale("log")
    from matplotlib.ticker import ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="both", labelsize=7)
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_ylabel("fraction of pulls")
    ax.set_title("Latency from the proxy's answer to a client's pull (CDF)")
    ax.axvline(200, color="#999", linestyle=":", linewidth=1)
    ax.text(205, 0.5, "first-byte target:\np50 ≤ 200 ms", fontsize=7, color="#666")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.25, 0.04))
    _footer(fig, doc)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    plt.close(fig)
    return out


def draw_scaleout(doc: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    points = scaleout_points(doc)
    procs = [p for p, _, _ in points]
    rates = [r for _, r, _ in points]
    one = next((r for p, r, _ in points if p == 1), rates[0])
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    ax.plot(procs, rates, marker="o", label="measured")
    ax.plot(procs, [one * p for p in procs], linestyle="--", color="#999", label="linear from 1 process")
    for p, r, x in points:
        ax.annotate(f"{r:.1f} (x{x:.2f})", (p, r), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xticks(procs)
    ax.set_xlabel("fetcher processes in one consumer group")
    ax.set_ylabel("images/s")
    ax.set_title(f"Scale-out: {doc.get('images_per_round', '?')} images of {doc.get('layer_mib', '?')} MiB, "
                 f"{doc.get('partitions', '?')} partitions", fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _footer(fig, doc)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    plt.close(fig)
    return out


def draw_egress(doc: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    names, series = egress_bars(doc)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [v / 2**20 for v in values], width, label=label)
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=10)
    ax.set_ylabel("MiB from the upstream")
    ax.set_title("Upstream bytes per scenario, side by side")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _footer(fig, doc)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    plt.close(fig)
    return out


def draw_soak(doc: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    series = soak_series(doc)
    xs = series["minutes"]
    cfg = doc.get("config", {})
    fig, (ax_rss, ax_lag, ax_out) = plt.subplots(3, 1, figsize=(8, 7.5), dpi=110, sharex=True)
    for name, mib in series["rss_mib"].items():
        ax_rss.plot([x for x, v in zip(xs, mib, strict=True) if v is not None], [v for v in mib if v is not None],
                    label=name)  # fmt: skip
    produce_end = (doc["t_produced"] - doc["t0"]) / 60 if "t_produced" in doc and "t0" in doc else None
    for ax in (ax_rss, ax_lag, ax_out):
        if produce_end is not None:
            ax.axvline(produce_end, color="#999", linestyle=":", linewidth=1)
            ax.axvspan(0, produce_end * 0.1, color="#eee")  # warm-up, left out of the RSS and lag figures
        ax.grid(True, alpha=0.3)
    ax_rss.set_ylabel("RSS MiB")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend(fontsize=8)
    ax_lag.plot(xs, series["lag"], color="tab:red")
    ax_lag.set_ylabel("input lag (events)")
    (produced,) = ax_out.plot(xs, series["produced"], label="ManifestPulled produced")
    ax_out.set_ylabel("events")
    twin = ax_out.twinx()
    (cached,) = twin.plot(xs, series["image_cached"], color="tab:green", label="ImageCached committed")
    twin.set_ylabel("images")
    ax_out.legend(handles=[produced, cached], fontsize=8, loc="upper left")
    ax_out.set_xlabel("minutes (grey band: warm-up; dotted line: end of producing)")
    fig.suptitle(f"Soak: {cfg.get('events', '?')} events in {cfg.get('minutes', '?')} min, "
                 f"{cfg.get('new_ratio', '?')} new, {cfg.get('fault_ratio', '?')} upstream faults, "
                 f"{cfg.get('fetchers', '?')} fetchers", fontsize=10)  # fmt: skip
    _footer(fig, doc)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=IMG)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in (("latency", draw_latency), ("scaleout", draw_scaleout), ("egress", draw_egress)):
        src = args.data / f"{name}.json"
        if not src.is_file():
            print(f"skipped {name}: no {src}")
            continue
        out = draw(json.loads(src.read_text()), args.out / f"bench-{name}.png")
        print(f"wrote {out}")
    src = args.data / "soak.json"
    if src.is_file():
        print(f"wrote {draw_soak(json.loads(src.read_text()), args.out / 'soak.png')}")
    else:
        print(f"skipped soak: no {src}")


if __name__ == "__main__":
    main()

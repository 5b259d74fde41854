"""Loaded by the fetcher under `bench.fill_throughput --profile-mem` (this directory is put on its PYTHONPATH).

Traces Python allocations with tracemalloc, started a few seconds in (tracing every import makes the process
miss its readiness deadline on a busy machine; what the imports hold is in the RSS before the fill) and, each
time the traced total grows past its previous peak by a step, writes the top allocation sites to
LAYERFILL_MEMHOOK_OUT as JSON: what the fill held at its peak. Bench-only: nothing in layerfill imports it."""

import json
import os
import threading
import time
import tracemalloc

_OUT = os.environ.get("LAYERFILL_MEMHOOK_OUT")
_STEP = 4 * 1024 * 1024
_TOP = 15
_DELAY_S = 3.0


def _dump(current: int) -> None:
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics("lineno")
    top = [
        {"site": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "bytes": s.size, "blocks": s.count}
        for s in stats[:_TOP]
    ]
    tmp = f"{_OUT}.tmp"
    with open(tmp, "w") as f:
        json.dump({"traced_bytes": current, "top": top}, f)
    os.replace(tmp, _OUT)


def _watch() -> None:
    time.sleep(_DELAY_S)
    tracemalloc.start()
    best = 0
    while True:
        current, _ = tracemalloc.get_traced_memory()
        if current > best + _STEP:
            best = current
            _dump(current)
        time.sleep(0.1)


if _OUT:
    threading.Thread(target=_watch, name="memhook", daemon=True).start()

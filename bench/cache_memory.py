"""What the fetcher keeps per distinct image it knows complete, measured with tracemalloc over N synthetic images
shaped like the soak's (registry host:port, a 23-character repository, sha256 digests), in maps sized for N:

- the images known complete, each with until when its repeats need no decoding (`FetcherService.known_complete`,
  a KnownSet over a FingerprintTable: 16-byte image fingerprint -> float in flat arrays taken at start-up; before:
  an OrderedDict LRU of the same, before that a cachetools LRU keyed by the ~120-byte image key);
- the artifact checker's claims (`ReferrerChecker._claimed`: a FingerprintTable, image fingerprint -> when next due;
  before: the same OrderedDict LRU, and before that image key bytes -> (checked at, interval)).

Two figures per map: what it takes when made (per image of capacity) and what filling it adds (per image): the
second is what a long-running fetcher's memory grew with while the maps were dicts (docs/reliability.md).

    .venv/bin/python -m bench.cache_memory [--images 40000]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from layerfill.consumers.fetcher.referrers import ReferrerChecker
from layerfill.kafka.keys import image_fingerprint, image_key
from layerfill.kafka.known import KnownSet

REGISTRY, REPOSITORY = "127.0.0.1:15001", "soak-abcdef12/img-00042"


def digest(i: int) -> str:
    return f"sha256:{i * 7919:064x}"


def traced(build: Callable[[], Any], fill: Callable[[Any], None]) -> tuple[int, int]:
    """Bytes held by `build`'s result once made, and what `fill` then adds to it."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    made = tracemalloc.get_traced_memory()[0]
    fill(kept)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return made - before, after - made


def measure(n: int) -> dict[str, dict[str, float]]:
    # The fingerprints are made outside the traced span: triage makes one per event and drops it.
    fps = [image_fingerprint(image_key(REGISTRY, REPOSITORY, digest(i))) for i in range(n)]
    until = time.time() + 3600

    def fill_known(k: KnownSet) -> None:
        for fp in fps:
            k[fp] = until

    def fill_claims(checker: ReferrerChecker) -> None:
        for fp in fps:
            checker._claimed[fp] = until

    out: dict[str, dict[str, float]] = {}
    for name, build, fill in (
        ("known_complete", lambda: KnownSet(maxsize=max(n, 1), fingerprints=True), fill_known),
        ("referrer_claims", lambda: ReferrerChecker(None, maxsize=max(n, 1)), fill_claims),
    ):
        made, filled = traced(build, fill)
        out[name] = {
            "made_per_image_of_capacity": made / n,
            "filling_per_image": round(filled / n, 1) + 0.0,
        }  # never "-0.0"
    out["total"] = {k: sum(v[k] for v in out.values()) for k in ("made_per_image_of_capacity", "filling_per_image")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=40_000)
    args = ap.parse_args()
    for name, per in measure(args.images).items():
        print(f"{name:16s} made: {per['made_per_image_of_capacity']:6.1f} bytes per image of capacity; "
              f"filling: {per['filling_per_image']:6.1f} bytes per image")  # fmt: skip


if __name__ == "__main__":
    main()

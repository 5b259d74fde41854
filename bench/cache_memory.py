"""What the fetcher keeps per distinct image it knows complete, measured with tracemalloc over N synthetic images
shaped like the soak's (registry host:port, a 23-character repository, sha256 digests):

- the images known complete, each with until when its repeats need no decoding (`FetcherService.known_complete`,
  a KnownSet: an OrderedDict LRU, 16-byte image fingerprint -> float; before: a cachetools LRU keyed by the
  ~120-byte image key, and before that a second dict for the float);
- the artifact checker's claims (`ReferrerChecker._claimed`: the same LRU, image fingerprint -> when next due; before:
  image key bytes -> (checked at, interval), and before that a (registry, repository, digest) tuple).

The soak's RSS growth (docs/reliability.md) is these filling toward their caps, in the steps of their hash tables.

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


def traced(build: Callable[[], Any]) -> int:
    """Bytes still allocated by `build`'s result once it returns."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return after - before


def measure(n: int) -> dict[str, float]:
    def known() -> KnownSet:
        k = KnownSet(maxsize=max(n, 1))
        for i in range(n):
            k[image_fingerprint(image_key(REGISTRY, REPOSITORY, digest(i)))] = time.time() + 3600
        return k

    def claims() -> ReferrerChecker:
        checker = ReferrerChecker(None, maxsize=max(n, 1))
        for i in range(n):
            checker._claimed[image_fingerprint(image_key(REGISTRY, REPOSITORY, digest(i)))] = time.time() + 3600
        return checker

    out = {name: traced(build) / n for name, build in (("known_complete", known), ("referrer_claims", claims))}
    out["total"] = sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=40_000)
    args = ap.parse_args()
    for name, per in measure(args.images).items():
        print(f"{name:16s} {per:6.0f} bytes per image")


if __name__ == "__main__":
    main()

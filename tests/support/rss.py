"""Peak resident memory of a process tree, sampled in the background."""

from __future__ import annotations

import threading

import psutil


class RssSampler:
    """Samples the RSS of `pid` plus all its descendants every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.first = 0  # the tree's RSS when sampling started (the idle baseline)
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _tree_rss(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._tree_rss()
            except psutil.NoSuchProcess:
                return
            if not self.samples:
                self.first = rss
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

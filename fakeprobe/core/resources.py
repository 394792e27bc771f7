"""Wall time and peak memory of a block of code."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Usage:
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # highest resident set size seen during the block
    added_mb: float = 0.0  # that peak minus the resident size when the block started


class measure:
    """``with measure() as usage: ...`` fills ``usage`` when the block ends.

    Peak memory is sampled every ``interval`` seconds from the process's resident set size, so
    it sees native allocations (XGBoost, BLAS) that ``tracemalloc`` would miss; a spike shorter
    than the interval can be missed.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.usage = Usage()
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __enter__(self) -> Usage:
        self._start_rss = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self.usage

    def __exit__(self, *exc: object) -> None:
        self.usage.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.usage.peak_rss_mb = self._peak / 2**20
        self.usage.added_mb = (self._peak - self._start_rss) / 2**20

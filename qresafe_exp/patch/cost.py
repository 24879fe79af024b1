"""What a patch costs: wall time and peak memory of the stage (resident set on CPU, allocator peak
on CUDA), sampled by a background thread because a CPU process has no resettable peak counter."""

from __future__ import annotations

import os
import threading
import time

import torch


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux: the process's lifetime peak is the best available
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CostMeter:
    """with CostMeter() as cost: ...; cost.facts() -> wall_seconds, rss_before/peak_mb (, cuda_peak_mb)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self._stop = threading.Event()

    def __enter__(self) -> "CostMeter":
        self.started = time.time()
        self.before = self.peak = _rss_bytes()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.wall_seconds = time.time() - self.started

    def facts(self) -> dict:
        mb = 2 ** 20
        out = {"wall_seconds": round(self.wall_seconds, 1), "rss_before_mb": round(self.before / mb),
               "rss_peak_mb": round(self.peak / mb)}
        if torch.cuda.is_available():
            out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / mb)
        return out

"""Wall time and peak memory of each pipeline stage, for metrics.json and the benchmarks.

Peak resident memory is sampled from /proc by a background thread while the stage runs (the
process-wide high-water mark only ever grows, so it cannot tell stages apart); on CUDA the stage's
peak allocated memory comes from torch's own counter, reset at the stage's start.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Callable, Iterator

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the high-water mark is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageMonitor:
    """``on_end(name, record)`` hears of each stage as it finishes (the cell's tracker); ``running`` is
    the stage under way (the one a failed cell failed in)."""

    def __init__(self, device: torch.device | None = None, interval_s: float = 0.02,
                 on_end: Callable[[str, dict], None] | None = None):
        self.device, self.interval_s, self.on_end = device, interval_s, on_end
        self.stages: dict[str, dict] = {}
        self.running: str | None = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start_rss, peak = rss_bytes(), [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes())
                stop.wait(self.interval_s)

        sampler = threading.Thread(target=sample, name=f"rss-{name}", daemon=True)
        cuda = self.device is not None and self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        sampler.start()
        self.running = name
        failed = True
        try:
            yield
            failed = False
        finally:
            stop.set()
            sampler.join()
            record = {"seconds": round(time.perf_counter() - started, 2),
                      "rss_start_mb": round(start_rss / MB, 1),
                      "peak_rss_mb": round(max(peak[0], rss_bytes()) / MB, 1)}
            if cuda:
                record["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(self.device) / MB, 1)
            self.stages[name] = record
            if not failed:
                self.running = None
                if self.on_end is not None:
                    self.on_end(name, record)

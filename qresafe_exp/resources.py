"""Wall time and peak memory of a span of work: the pipeline's stages (metrics.json `resources`) and a
patch's train and merge steps (metrics.json `patch.cost`), measured by one mechanism so they nest.

Peak resident memory is sampled from /proc by one background thread while any measurement is open
(the process-wide high-water mark only ever grows, so it cannot tell spans apart). On CUDA the peak
comes from torch's allocator counter, which has one global high-water mark: a measurement that
starts inside another must reset it, so every open measurement first folds the counter's current
peak into its own (``PeakStack``), and an inner measurement never loses an outer one's peak.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 1024 * 1024
SAMPLE_INTERVAL_S = 0.02


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError):  # not Linux: the high-water mark is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Measurement:
    """One measured span; the peaks grow while it is open and are final once it has closed."""

    rss_start: int
    rss_peak: int
    cuda_peak: int | None = None  # bytes, None when the span was not measured on CUDA
    seconds: float = 0.0

    def stage_record(self) -> dict:
        """The pipeline's per-stage record (metrics.json `resources.<stage>`)."""
        record = {
            "seconds": round(self.seconds, 2),
            "rss_start_mb": round(self.rss_start / MB, 1),
            "peak_rss_mb": round(self.rss_peak / MB, 1),
        }
        if self.cuda_peak is not None:
            record["cuda_peak_mb"] = round(self.cuda_peak / MB, 1)
        return record

    def cost_facts(self) -> dict:
        """A patch step's cost (metrics.json `patch.cost`: train_info.json / merge_info.json `cost`)."""
        out = {
            "wall_seconds": round(self.seconds, 1),
            "rss_before_mb": round(self.rss_start / MB),
            "rss_peak_mb": round(self.rss_peak / MB),
        }
        if self.cuda_peak is not None:
            out["cuda_peak_mb"] = round(self.cuda_peak / MB)
        return out


class PeakStack:
    """Peaks of nested spans from one resettable high-water counter (torch.cuda's allocator peak).

    ``read()`` gives the counter's peak since its last ``reset()``. Each span resets it when it opens
    (so its peak starts from the memory in use then), after folding the reading into every span
    already open: an outer span's peak is the max over all the segments of its own interval."""

    def __init__(self, read: Callable[[], int], reset: Callable[[], None]):
        self.read, self.reset = read, reset
        self.open: list[Measurement] = []

    def enter(self, span: Measurement) -> None:
        self._fold()
        self.reset()
        span.cuda_peak = 0
        self.open.append(span)

    def exit(self, span: Measurement) -> None:
        self._fold()
        self.open.remove(span)

    def _fold(self) -> None:
        if self.open:
            now = self.read()
            for span in self.open:
                span.cuda_peak = max(span.cuda_peak, now)


class _RssSampler:
    """One thread that raises the RSS peak of every open span; it runs only while a span is open."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open: list[Measurement] = []
        self.thread: threading.Thread | None = None

    def enter(self, span: Measurement) -> None:
        with self.lock:
            self.open.append(span)
            # a sampler that died (an exception in it, or a forked child that inherited this object without
            # its thread) would leave every later span unsampled: start one whenever none is alive
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
                self.thread.start()

    def exit(self, span: Measurement) -> None:
        with self.lock:
            span.rss_peak = max(span.rss_peak, rss_bytes())
            self.open.remove(span)

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.open:
                    self.thread = None
                    return
                now = rss_bytes()
                for span in self.open:
                    span.rss_peak = max(span.rss_peak, now)
            time.sleep(SAMPLE_INTERVAL_S)


_RSS = _RssSampler()
_CUDA: dict[int, PeakStack] = {}  # one per CUDA device index: each has its own allocator counter
_CUDA_LOCK = threading.Lock()


def _cuda_stack(device: torch.device | None) -> PeakStack | None:
    """The peak stack of the CUDA device measured: `device` when it is CUDA; with no device, the current
    CUDA device when there is one (a patch step measures whatever it ran on); None on CPU."""
    if device is not None and device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    if index not in _CUDA:
        _CUDA[index] = PeakStack(
            lambda: torch.cuda.max_memory_allocated(index), lambda: torch.cuda.reset_peak_memory_stats(index)
        )
    return _CUDA[index]


@contextlib.contextmanager
def measure(device: torch.device | None = None) -> Iterator[Measurement]:
    """with measure(device) as span: ...; then span.stage_record() or span.cost_facts()."""
    start = rss_bytes()
    span = Measurement(rss_start=start, rss_peak=start)
    cuda = _cuda_stack(device)
    if cuda is not None:
        with _CUDA_LOCK:
            cuda.enter(span)
    _RSS.enter(span)
    started = time.perf_counter()
    try:
        yield span
    finally:
        span.seconds = time.perf_counter() - started
        _RSS.exit(span)
        if cuda is not None:
            with _CUDA_LOCK:
                cuda.exit(span)


class StageMonitor:
    """The pipeline's stages of one cell: monitor.stage(name) records metrics.json `resources.<name>`.
    ``on_end(name, record)`` hears of each stage as it finishes (the cell's tracker); ``running`` is
    the stage under way (the one a failed cell failed in)."""

    def __init__(self, device: torch.device | None = None, on_end: Callable[[str, dict], None] | None = None):
        self.device = device if device is not None else torch.device("cpu")
        self.on_end = on_end
        self.stages: dict[str, dict] = {}
        self.running: str | None = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Measurement]:
        span, failed = None, True
        self.running = name
        try:
            with measure(self.device) as span:
                yield span
            failed = False
        finally:  # a failed stage is recorded too (its time and memory up to the failure)
            if span is not None:
                self.stages[name] = span.stage_record()
            if not failed:
                self.running = None
                if self.on_end is not None:
                    self.on_end(name, self.stages[name])

"""One resource monitor (qresafe_exp/resources.py) for pipeline stages and patch steps, nesting correctly:
an inner measurement never lowers or resets an outer one's peak. RSS for real (bytes touched in this
process); the CUDA stack logic on a real resettable high-water counter; the CUDA allocator itself on a GPU."""

from __future__ import annotations

import mmap
import time

import pytest
import torch

from qresafe_exp.resources import MB, SAMPLE_INTERVAL_S, Measurement, PeakStack, StageMonitor, measure

BLOCK = 200 * MB


def _touch(n: int) -> mmap.mmap:
    # fresh anonymous pages, not malloc's: a bytearray can reuse heap pages an earlier test left resident
    # (glibc's trim threshold rises after large frees), and then the RSS does not move at all
    block = mmap.mmap(-1, n)
    for offset in range(0, n, mmap.PAGESIZE):  # every page resident, with no n-byte temporary beside it
        block[offset] = 1
    time.sleep(0.5)  # many sampler ticks while it is held (0.1 s was missed with another job on the cores)
    return block


def test_nested_rss_peaks_each_see_their_own_interval():
    with measure() as outer:
        _touch(BLOCK).close()  # before the inner span opens: only the outer one holds this peak
        with measure() as inner:
            _touch(BLOCK // 4).close()
    assert outer.rss_peak - outer.rss_start >= 0.9 * BLOCK
    assert inner.rss_peak - inner.rss_start < 0.6 * BLOCK  # the outer's earlier 200 MB is not the inner's
    assert inner.rss_peak - inner.rss_start >= 0.2 * BLOCK and outer.rss_peak >= inner.rss_peak
    assert outer.seconds >= inner.seconds > 0.09


def test_stage_monitor_keeps_its_record_names_and_a_patch_step_its_cost_names():
    monitor = StageMonitor(torch.device("cpu"))
    with monitor.stage("patch"):
        with measure() as step:
            _touch(BLOCK // 4).close()
    record, cost = monitor.stages["patch"], step.cost_facts()
    assert set(record) == {"seconds", "rss_start_mb", "peak_rss_mb"}  # metrics.json `resources.<stage>`
    assert set(cost) >= {"wall_seconds", "rss_before_mb", "rss_peak_mb"}  # metrics.json `patch.cost`
    assert record["peak_rss_mb"] - record["rss_start_mb"] >= 45 and cost["rss_peak_mb"] - cost["rss_before_mb"] >= 45


def test_a_failed_stage_is_still_recorded():
    monitor = StageMonitor(torch.device("cpu"))
    with pytest.raises(RuntimeError):
        with monitor.stage("quantize"):
            raise RuntimeError("boom")
    assert monitor.stages["quantize"]["seconds"] >= 0


class HighWaterCounter:
    """What torch.cuda's allocator exposes: memory in use, and the peak since the last reset."""

    def __init__(self):
        self.used = self.peak = 0

    def allocate(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def free(self, n: int) -> None:
        self.used -= n

    def reset(self) -> None:
        self.peak = self.used


def _span() -> Measurement:
    return Measurement(rss_start=0, rss_peak=0)


def test_an_inner_span_never_resets_the_outer_spans_peak():
    counter = HighWaterCounter()
    stack = PeakStack(lambda: counter.peak, counter.reset)
    outer, inner, later = _span(), _span(), _span()
    stack.enter(outer)
    counter.allocate(1000)  # the outer's peak: before the inner span starts (and resets the counter)
    counter.free(900)
    stack.enter(inner)
    counter.allocate(300)
    counter.free(300)
    stack.exit(inner)
    stack.enter(later)  # a second inner span, after the first
    counter.allocate(50)
    stack.exit(later)
    stack.exit(outer)
    assert outer.cuda_peak == 1000  # reading the counter alone at the end would say 150
    assert inner.cuda_peak == 400  # 100 in use when it started + its own 300
    assert later.cuda_peak == 150
    assert stack.open == []


def test_a_peak_inside_the_inner_span_counts_for_the_outer_one():
    counter = HighWaterCounter()
    stack = PeakStack(lambda: counter.peak, counter.reset)
    outer, inner = _span(), _span()
    stack.enter(outer)
    counter.allocate(10)
    stack.enter(inner)
    counter.allocate(5000)
    counter.free(5000)
    stack.exit(inner)
    stack.exit(outer)
    assert outer.cuda_peak == inner.cuda_peak == 5010


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nested_cuda_peaks_on_the_real_allocator():
    device = torch.device("cuda", torch.cuda.current_device())
    with measure(device) as outer:
        block = torch.empty(BLOCK, dtype=torch.uint8, device=device)
        del block
        with measure(device) as inner:
            small = torch.empty(BLOCK // 4, dtype=torch.uint8, device=device)
            del small
    assert outer.cuda_peak >= BLOCK and inner.cuda_peak < BLOCK
    assert outer.stage_record()["cuda_peak_mb"] >= 200 and "cuda_peak_mb" in inner.cost_facts()


def test_a_dead_sampler_is_replaced_so_later_spans_are_still_sampled():
    from qresafe_exp import resources

    dead = resources.threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    for _ in range(100):  # the last span's sampler notices it has nothing open and exits within a tick
        if resources._RSS.thread is None:
            break
        time.sleep(SAMPLE_INTERVAL_S)
    assert resources._RSS.thread is None
    resources._RSS.thread = dead  # what a sampler killed by an exception, or lost in a fork, leaves behind
    with measure() as span:
        _touch(BLOCK // 4).close()
    assert span.rss_peak - span.rss_start >= 0.2 * BLOCK

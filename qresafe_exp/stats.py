"""Rates with their 95% Wilson score interval (good at small n and near 0 or 1)."""

from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def rate(flags: list[bool]) -> dict:
    """{'rate', 'k', 'n', 'ci95': [lo, hi]} for a list of booleans; rate is None when n == 0."""
    n, k = len(flags), sum(bool(f) for f in flags)
    lo, hi = wilson_interval(k, n)
    return {"rate": (k / n) if n else None, "k": k, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def _mean_and_half_width(xs: list[float], z: float) -> tuple[float, float]:
    """The mean and the half-width of its normal-approximation interval (0 for a single value)."""
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return mean, z * sd / math.sqrt(n)


def geometric_mean_ci(values: list[float], z: float = 1.959964) -> dict:
    """{'value', 'n', 'ci95'}: the geometric mean of positive values (e.g. per-item perplexities),
    with a normal-approximation 95% interval on the mean of their logs, mapped back."""
    logs = [math.log(v) for v in values if v is not None and v > 0]
    if not logs:
        return {"value": None, "n": 0, "ci95": [None, None]}
    mean, half = _mean_and_half_width(logs, z)
    return {"value": round(math.exp(mean), 4), "n": len(logs),
            "ci95": [round(math.exp(mean - half), 4), round(math.exp(mean + half), 4)]}


def mean_ci(values: list[float], z: float = 1.959964, bounds: tuple[float, float] | None = None,
            min_n: int = 1) -> dict:
    """{'value', 'n', 'ci95'}: the mean with a normal-approximation 95% interval (scores, lengths),
    clipped to ``bounds`` where the quantity has them (a win rate lies in [0, 100]); below ``min_n``
    values the interval is [None, None]."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return {"value": None, "n": 0, "ci95": [None, None]}
    mean, half = _mean_and_half_width(xs, z)
    if n < min_n:
        return {"value": round(mean, 4), "n": n, "ci95": [None, None]}
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    return {"value": round(mean, 4), "n": n, "ci95": [round(lo, 4), round(hi, 4)]}

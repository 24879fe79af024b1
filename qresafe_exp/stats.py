"""Rates with their 95% Wilson score interval (good at small n and near 0 or 1), and paired
differences to a reference on the same prompts: an interval and an exact test that use the pairing
(a difference measured on the same prompts is far tighter than two independent intervals suggest).
Hand-written: scipy is not in the pinned stack."""

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
    return {
        "value": round(math.exp(mean), 4),
        "n": len(logs),
        "ci95": [round(math.exp(mean - half), 4), round(math.exp(mean + half), 4)],
    }


def mean_ci(
    values: list[float], z: float = 1.959964, bounds: tuple[float, float] | None = None, min_n: int = 1
) -> dict:
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


# ---------------------------------------------------------------- paired differences (same prompts)
def _sig4(p: float) -> float:
    return float(f"{p:.4g}")  # 4 significant digits: a tiny p stays visible (round(p, 4) would say 0)


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair trials: twice the smaller tail,
    capped at 1 (the binomial at 0.5 is symmetric); 1.0 when n == 0."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers, one correctly rounded division


def fisher_exact_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Exact two-sided p-value of the 2x2 table [[a, b], [c, d]] (Fisher): the probability, with every
    margin fixed, of the tables no more likely than the one seen (a relative tolerance keeps ties in).
    For two unpaired groups: a of a + b in the first, c of c + d in the second."""
    row, col, n = a + b, a + c, a + b + c + d
    if n == 0:
        return 1.0
    total = math.comb(n, col)

    def chance(x: int) -> float:
        return math.comb(row, x) * math.comb(n - row, col - x) / total

    seen = chance(a)
    tables = range(max(0, col - (n - row)), min(row, col) + 1)
    return _sig4(min(1.0, sum(p for x in tables if (p := chance(x)) <= seen * (1 + 1e-7))))


def newcombe_paired_interval(a: int, b: int, c: int, d: int, z: float = 1.959964) -> tuple[float, float]:
    """95% interval for p1 - p2 of paired proportions (Newcombe 1998, Stat Med 17:2635, method 10).

    a: both positive, b: only the first, c: only the second, d: neither; p1 = (a+b)/n, p2 = (a+c)/n.
    The two Wilson intervals are combined "square and add" with the phi correlation of the pairs;
    phi uses Newcombe's correction (ad - bc is shrunk by n/2 towards 0 when positive, kept when
    negative) and is 0 when a margin is empty.
    """
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    corrected = max(cross - n / 2, 0.0) if cross > 0 else cross
    phi = corrected / math.sqrt(margins) if margins else 0.0
    theta = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, theta - below), min(1.0, theta + above)


def paired_binary(cell: list[bool], ref: list[bool]) -> dict:
    """The cell's rate minus the reference's on the same prompts (two aligned lists).

    {'delta', 'ci95' (Newcombe's hybrid score interval, method 10), 'n_pairs', 'cell_only' (b: True
    in the cell only), 'reference_only' (c), 'p_value' (exact two-sided McNemar: b of b + c at 0.5),
    'test', 'significant' (p < 0.05)}. No pairs: delta and interval are None, p is 1.
    """
    if len(cell) != len(ref):
        raise ValueError(
            f"paired_binary: {len(cell)} cell values but {len(ref)} reference values; pair them on the prompt first"
        )
    n = len(cell)
    a = sum(bool(x) and bool(y) for x, y in zip(cell, ref))
    b = sum(bool(x) and not y for x, y in zip(cell, ref))
    c = sum(not x and bool(y) for x, y in zip(cell, ref))
    p = binomial_two_sided(b, b + c)
    out = {
        "delta": None,
        "ci95": [None, None],
        "n_pairs": n,
        "cell_only": b,
        "reference_only": c,
        "p_value": _sig4(p),
        "test": "mcnemar_exact",
        "significant": p < 0.05,
    }
    if n:
        lo, hi = newcombe_paired_interval(a, b, c, n - a - b - c)
        out.update(delta=round((b - c) / n, 4), ci95=[round(lo, 4), round(hi, 4)])
    return out


def _t_coverage(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with an integer df: the finite series of Abramowitz & Stegun
    26.7.3-4 in theta = atan(t / sqrt(df)), exact up to rounding."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # sin(theta) * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))
        term = total = 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        return s * total
    term, total = math.cos(theta), 0.0  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + ...))
    for j in range(1, (df - 1) // 2 + 1):
        total += term
        term *= c2 * (2 * j) / (2 * j + 1)
    return 2 / math.pi * (theta + s * total)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t: bisection on the exact CDF above; beyond 5000
    degrees of freedom the normal quantile (they differ by < 0.001 there)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    if df > 5000:
        return z
    target, lo, hi = 2 * p - 1, z, max(2 * z, 1.0)
    while _t_coverage(hi, df) < target:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_coverage(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


def paired_continuous(cell: list[float], ref: list[float], log: bool = True) -> dict:
    """Per-item values of the cell and the reference on the same items (two aligned lists), e.g.
    perplexities. Pairs with a missing value (or, with ``log``, a non-positive one) are dropped.

    log=True: 'delta' is the geometric mean of the cell minus the reference's; the t-interval is
    on the mean paired difference of logs (the log of their ratio, also given as 'ratio' and
    'ratio_ci95'), mapped to the delta scale as GM_ref * (ratio - 1), i.e. with the reference's
    geometric mean held fixed. log=False: the difference of means with a paired t-interval.
    The t quantile is exact (scipy is not in the pinned stack; see t_quantile). 'p_value': exact
    two-sided sign test (ties dropped), which needs no normality; 'cell_higher' / 'reference_higher'
    / 'ties' count the pairs. The interval needs 2 pairs (None otherwise).
    """
    if len(cell) != len(ref):
        raise ValueError(
            f"paired_continuous: {len(cell)} cell values but {len(ref)} reference values; pair them on the item first"
        )
    usable = lambda v: v is not None and (v > 0 if log else math.isfinite(v))  # noqa: E731
    pairs = [(float(x), float(y)) for x, y in zip(cell, ref) if usable(x) and usable(y)]
    scale = math.log if log else (lambda v: v)
    xs, ys = [scale(x) for x, _ in pairs], [scale(y) for _, y in pairs]
    diffs = [x - y for x, y in zip(xs, ys)]
    n, up, down = len(pairs), sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    p = binomial_two_sided(up, up + down)
    out = {
        "delta": None,
        "ci95": [None, None],
        "n_pairs": n,
        "cell_higher": up,
        "reference_higher": down,
        "ties": n - up - down,
        "p_value": _sig4(p),
        "test": "sign_exact",
        "significant": p < 0.05,
    }
    if n == 0:
        return out
    mean_d, ref_center = sum(diffs) / n, sum(ys) / n
    interval = [None, None]
    if n > 1:
        sd = math.sqrt(sum((d - mean_d) ** 2 for d in diffs) / (n - 1))
        half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
        interval = [mean_d - half, mean_d + half]
    if log:
        base = math.exp(ref_center)
        out["delta"] = round(base * (math.exp(mean_d) - 1), 4)
        out["ratio"] = round(math.exp(mean_d), 4)
        out["ratio_ci95"] = [round(math.exp(v), 4) if v is not None else None for v in interval]
        out["ci95"] = [round(base * (math.exp(v) - 1), 4) if v is not None else None for v in interval]
    else:
        out["delta"] = round(mean_d, 4)
        out["ci95"] = [round(v, 4) if v is not None else None for v in interval]
    return out

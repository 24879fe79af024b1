import pytest

import math

from qresafe_exp.stats import geometric_mean_ci, rate, wilson_interval


def test_wilson_matches_closed_form_values():
    # k=0, n=10: upper bound z^2/(n+z^2) = 3.8415/13.8415
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(3.841459 / 13.841459, abs=1e-4)
    # k=5, n=10: symmetric around 0.5
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi, abs=1e-9)
    assert lo == pytest.approx(0.2366, abs=1e-4)


def test_interval_contains_estimate_and_shrinks_with_n():
    for k, n in [(1, 4), (10, 40), (100, 400)]:
        lo, hi = wilson_interval(k, n)
        assert lo <= k / n <= hi
    widths = [hi - lo for lo, hi in (wilson_interval(n // 4, n) for n in (8, 80, 800))]
    assert widths[0] > widths[1] > widths[2]


def test_rate_reports_n_and_ci():
    block = rate([True, False, False, True])
    assert block["rate"] == 0.5 and block["k"] == 2 and block["n"] == 4
    assert block["ci95"][0] < 0.5 < block["ci95"][1]
    assert rate([])["rate"] is None


def test_geometric_mean_ci_of_perplexities():
    block = geometric_mean_ci([2.0, 8.0])
    assert block["value"] == pytest.approx(4.0) and block["n"] == 2
    lo, hi = block["ci95"]
    assert lo < 4.0 < hi and lo * hi == pytest.approx(16.0, rel=1e-3)  # symmetric in log space
    assert geometric_mean_ci([5.0, 5.0, 5.0])["ci95"] == [5.0, 5.0]
    assert geometric_mean_ci([None])["value"] is None
    assert math.isclose(geometric_mean_ci([3.0])["value"], 3.0)

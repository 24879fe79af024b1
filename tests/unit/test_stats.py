import math

import pytest

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


# ---------------------------------------------------------------- paired differences
from qresafe_exp.stats import (  # noqa: E402 (this section's imports, beside its tests)
    binomial_two_sided,
    newcombe_paired_interval,
    paired_binary,  # noqa: E402
    paired_continuous,
    t_quantile,
)


def test_exact_mcnemar_p_values():
    # b=1, c=9: 2 * P(X <= 1 | Bin(10, .5)) = 2 * (1 + 10) / 1024 = 0.021484375
    assert binomial_two_sided(1, 10) == pytest.approx(0.021484375)
    assert binomial_two_sided(9, 10) == binomial_two_sided(1, 10)  # two-sided: symmetric
    assert binomial_two_sided(5, 10) == 1.0 and binomial_two_sided(0, 0) == 1.0
    assert binomial_two_sided(0, 6) == pytest.approx(2 / 64)
    block = paired_binary([True] + [False] * 9 + [True] * 5, [False] + [True] * 9 + [True] * 5)
    assert (block["cell_only"], block["reference_only"], block["n_pairs"]) == (1, 9, 15)
    assert block["p_value"] == 0.02148 and block["significant"] and block["test"] == "mcnemar_exact"
    assert block["delta"] == round((1 - 9) / 15, 4)


def test_newcombe_method_10_matches_the_hand_derivation():
    # Newcombe (1998, Stat Med 17:2635) example: a=36 (both), b=12 (first only), c=2, d=0, n=50.
    # p1 = 48/50 = .96, p2 = 38/50 = .76, theta = .20. Wilson (z = 1.959964, z^2 = 3.841459):
    #   48/50: centre (.96 + z^2/100) / (1 + z^2/50) = .92718, half .06178 -> [.86540, .98896]
    #   38/50: centre (.76 + z^2/100) / (1 + z^2/50) = .74145, half .11558 -> [.62587, .85703]
    # ad - bc = -24 (negative: no correction); margins 48*2*38*12 = 43776; phi = -24/209.23 = -.11471
    # below = sqrt(.09460^2 - 2 phi (.09460)(.09703) + .09703^2) = .14307 -> L = .2 - .14307 = .05693
    # above = sqrt(.02896^2 - 2 phi (.02896)(.13413) + .13413^2) = .14043 -> U = .2 + .14043 = .34043
    lo, hi = newcombe_paired_interval(36, 12, 2, 0)
    assert lo == pytest.approx(0.05693, abs=1e-5) and hi == pytest.approx(0.34043, abs=1e-5)
    # a=8, b=5, c=4, d=26, n=43: ad - bc = 188 > n/2, so phi uses 188 - 21.5 = 166.5:
    #   phi = 166.5 / sqrt(13*30*12*31 = 145080) = .43713; Wilson 13/43 = [.18602, .45105],
    #   12/43 = [.16747, .42691]; theta = 1/43 = .02326
    #   below = sqrt(.11631^2 - 2 phi (.11631)(.14784) + .14784^2) = .14266 -> L = -.11940
    #   above = sqrt(.14873^2 - 2 phi (.14873)(.11160) + .11160^2) = .14165 -> U = .16490
    lo, hi = newcombe_paired_interval(8, 5, 4, 26)
    assert lo == pytest.approx(-0.11940, abs=1e-5) and hi == pytest.approx(0.16490, abs=1e-5)
    # pairs that agree (phi > 0) give a narrower interval than treating the samples as independent
    # (phi = 0): sqrt(.11631^2 + .14784^2) + sqrt(.14873^2 + .11160^2) = .18811 + .18594 = .37405
    assert hi - lo == pytest.approx(0.2843, abs=1e-4) and hi - lo < 0.37405


def test_paired_binary_edge_cases():
    empty = paired_binary([], [])
    assert empty["n_pairs"] == 0 and empty["delta"] is None and empty["ci95"] == [None, None]
    assert empty["p_value"] == 1.0 and not empty["significant"]
    same = paired_binary([True, False, True], [True, False, True])  # b + c = 0
    assert same["delta"] == 0.0 and same["p_value"] == 1.0 and not same["significant"]
    assert same["ci95"][0] < 0 < same["ci95"][1]
    all_true = paired_binary([True] * 5, [True] * 5)  # empty margins: phi = 0, interval still finite
    assert all_true["ci95"] == [-0.4345, 0.4345]
    flipped = paired_binary([True] * 20, [False] * 20)
    assert flipped["delta"] == 1.0 and flipped["ci95"][1] == 1.0 and flipped["significant"]
    with pytest.raises(ValueError, match="pair them"):
        paired_binary([True], [])


def test_t_quantile_matches_the_t_table():
    for df, expected in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (9, 2.2622), (30, 2.0423), (120, 1.9799)]:
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_paired_continuous_geometric_means_and_sign_test():
    # every item doubles: the ratio is exactly 2, the delta GM(cell) - GM(ref) = 4 - 2
    block = paired_continuous([2.0, 8.0, 4.0], [1.0, 4.0, 2.0])
    assert block["ratio"] == 2.0 and block["delta"] == 2.0 and block["ci95"] == [2.0, 2.0]
    assert (block["cell_higher"], block["reference_higher"]) == (3, 0)
    assert block["p_value"] == 0.25 and block["test"] == "sign_exact"  # 2 / 2^3: 3 pairs cannot be significant
    # log ratios .693, .693, .916: mean .7675, sd .1287, t(2) = 4.3027 -> ratio [1.5644, 2.9670]
    block = paired_continuous([2.0, 8.0, 5.0], [1.0, 4.0, 2.0])
    assert block["ratio_ci95"] == pytest.approx([1.5644, 2.967], abs=1e-4)
    gm_ref = (1.0 * 4.0 * 2.0) ** (1 / 3)
    assert block["delta"] == pytest.approx((2 * 8 * 5) ** (1 / 3) - gm_ref, abs=1e-4)
    assert block["ci95"] == pytest.approx([gm_ref * 0.5644, gm_ref * 1.967], abs=1e-3)
    many = paired_continuous([v * 1.1 for v in range(1, 21)], list(range(1, 21)))
    assert many["p_value"] == pytest.approx(2 / 2**20, rel=1e-3) and many["significant"]
    # missing or non-positive values drop the pair; a single pair has no interval
    one = paired_continuous([None, 3.0, 0.0], [1.0, 2.0, 2.0])
    assert one["n_pairs"] == 1 and one["ci95"] == [None, None] and one["delta"] == 1.0
    assert paired_continuous([], [])["delta"] is None
    plain = paired_continuous([3.0, 5.0, 9.0], [1.0, 2.0, 4.0], log=False)
    # differences 2, 3, 5: mean 3.3333, sd 1.5275, t(2) * sd / sqrt(3) = 3.7945
    assert plain["delta"] == 3.3333 and plain["ci95"] == pytest.approx([-0.4612, 7.1279], abs=1e-4)
    assert "ratio" not in plain


def test_fisher_exact_matches_published_values():
    from qresafe_exp.stats import fisher_exact_two_sided

    assert fisher_exact_two_sided(3, 1, 1, 3) == pytest.approx(0.4857, abs=1e-4)  # Fisher's tea tasting
    assert fisher_exact_two_sided(1, 9, 11, 3) == pytest.approx(0.002759, abs=1e-6)  # Wikipedia's 2x2 example
    assert fisher_exact_two_sided(5, 0, 0, 5) == pytest.approx(2 / math.comb(10, 5), rel=1e-3)  # both extremes
    assert fisher_exact_two_sided(2, 2, 2, 2) == 1.0 and fisher_exact_two_sided(0, 0, 0, 0) == 1.0
    assert fisher_exact_two_sided(1, 9, 11, 3) == fisher_exact_two_sided(11, 3, 1, 9)  # symmetric in the groups

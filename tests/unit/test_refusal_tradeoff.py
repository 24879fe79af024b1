"""The refusal trade-off figure (report/figures.py): harmful-request refusal pooled over the suites every plotted
cell has, against XSTest-safe refusal, one point per cell and patch form."""

import pytest

from qresafe_exp.report import figures


def _row(cell, quant, patch, xstest, refused, n=64, variant=None, **extra):
    row = {
        "cell": cell,
        "model": "m",
        "quant": quant,
        "patch": patch,
        "patch_tag": None if patch == "none" else f"{patch}-lr2e-05",
        "eval": "claims",
        "protocol": "vanilla",
        "xstest.refusal_rate": xstest,
        "xstest.refusal_rate.lo": max(0.0, xstest - 0.1),
        "xstest.refusal_rate.hi": min(1.0, xstest + 0.1),
        **extra,
    }
    for suite, k in refused.items():
        row[f"{suite}.refused"], row[f"{suite}.refused.n"] = k / n, n
    if variant:
        row["variant"] = variant
        row["patch_tag"] += " (unmerged)"
    return row


ROWS = [
    _row("m.fp.none.claims", "none", "none", 0.32, {"advbench": 64, "harmfulqa": 60, "catqa": 50}),
    _row("m.q.none.claims", "qlora", "none", 0.03, {"advbench": 17, "harmfulqa": 0}),
    _row("m.q.qresafe.claims", "qlora", "qresafe", 0.29, {"advbench": 56, "harmfulqa": 59}),
    _row("m.q.qresafe.claims [unmerged]", "qlora", "qresafe", 0.10, {"advbench": 24, "harmfulqa": 20}, variant="u"),
]


def test_points_pool_the_refusal_counts_of_the_suites_every_cell_has():
    fig = figures.draw_refusal_tradeoff(ROWS)
    ax, key_ax = fig.axes
    # catqa only the FP cell has: left out, so every point pools the same two suites (k summed over n = 128)
    assert "AdvBench, HarmfulQA" in ax.get_ylabel() and "CatQA" not in ax.get_ylabel()
    plotted = sorted(
        (round(line.get_xdata()[0], 2), round(line.get_ydata()[0], 4)) for line in (c.lines[0] for c in ax.containers)
    )
    want = sorted(
        (r["xstest.refusal_rate"], round(sum(r[f"{s}.refused"] * 64 for s in ("advbench", "harmfulqa")) / 128, 4))
        for r in ROWS
    )
    assert plotted == want
    key = key_ax.texts[0].get_text()
    assert "FP" in key and "qlora lr2e-05 (unmerged)" in key and "also holds: qresafe" in key
    rate, lo, hi = figures.pooled_refusal(ROWS[1], ["advbench", "harmfulqa"])
    assert rate == pytest.approx(17 / 128) and lo < rate < hi


def test_no_figure_without_a_patched_cell_or_refusal_counts(tmp_path):
    assert figures.draw_refusal_tradeoff(ROWS[:2]) is None  # FP and unpatched only: nothing to compare
    without_counts = [{k: v for k, v in r.items() if ".refused" not in k} for r in ROWS]
    assert figures.draw_refusal_tradeoff(without_counts) is None
    assert figures.draw_refusal_tradeoff([ROWS[2]]) is None
    path = figures.refusal_tradeoff(ROWS, tmp_path)
    assert path.name == "refusal_tradeoff-claims-vanilla.png" and path.with_suffix(".pdf").exists()


def test_a_testbed_search_draws_one_star_per_model_and_the_over_refusal_bound():
    """Two FP models and no patch (study claim_testbed): drawn, with the item-0 bound; one model alone is not."""
    models = [
        {**_row(f"{m}.fp.none.claims", "none", "none", x, {"advbench": 64, "harmfulqa": 60}), "model": m}
        for m, x in (("b", 0.32), ("d", 0.22))
    ]
    fig = figures.draw_refusal_tradeoff(models)
    ax, key_ax = fig.axes
    bounds = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]
    assert bounds == [figures.TESTBED_BOUND] and "a star per FP model" in ax.get_title()
    assert "b FP" in key_ax.texts[0].get_text() and "d FP" in key_ax.texts[0].get_text()
    assert figures.draw_refusal_tradeoff(models[:1] + [{**models[0], "cell": "b.fp.none.claims.seed1"}]) is None


def test_a_tags_parts_keep_a_numbers_exponent_whole():
    """'lr2e-05' is one knob: split at its '-' the key printed '05 (unmerged)' for a point's name."""
    assert figures.tag_parts("qresafe-t0.6-lr5e-06-e1-n96") == ["qresafe", "t0.6", "lr5e-06", "e1", "n96"]
    assert figures.shared_tag_parts(["qresafe-lr2e-05", "qresafe-lr1e-04"]) == ["qresafe"]

"""One reader of a cell's metrics.json (qresafe_exp/metrics.py) behind the summary table, the report's tidy
rows and the pipeline's deltas; and the patch's numeric settings as report axes (Table 5 sorts by them)."""

from __future__ import annotations

import json

import pytest

from qresafe_exp import metrics
from qresafe_exp.cell_identity import patch_knobs
from qresafe_exp.pipeline import _delta
from qresafe_exp.report import tables
from qresafe_exp.report.collect import read_study, tidy_row
from qresafe_exp.stats import rate
from qresafe_exp.summary import table_row


def _rates(k: int, n: int) -> dict:
    return rate([True] * k + [False] * (n - k))


def _cell(name: str, k: int, **axes) -> dict:
    return {
        "cell": name,
        "study": "s",
        "reference_cell": "m.fp.none",
        "axes": {
            "model": "m",
            "quant": "qlora",
            "bits": 4,
            "group_size": None,
            "calib": "risk3",
            "patch": "qresafe",
            **axes,
        },
        "protocol": {"eval": "reduced", "protocol": "vanilla"},
        "scores": {
            "advbench": {
                "metric": "asr",
                "asr": _rates(k, 64),
                "asr_non_degenerate": _rates(k, 64),
                "degenerate": _rates(0, 64),
            },
            "alpaca_eval_ppl": {
                "metric": "reference_perplexity",
                "reference_perplexity": {"value": 8.8, "ci95": [8.1, 9.6], "n": 16},
            },
        },
        "summary": {"degenerate": _rates(0, 64), "broken": False},
        "vs_reference": {"advbench.asr": k / 64},
        "cost": {"wall_seconds": 1.0, "eval_seconds": 3.0},
        "patch": {
            "cost": {"wall_seconds": 60.0, "rss_peak_mb": 900},
            "train": {"train_seconds": 30.0, "snip_seconds": 12.5},  # the rest of the 60 s: generating the pairs
        },
    }


def test_headlines_of_rates_and_values_and_the_delta_between_two_blocks():
    cell = metrics.parse(_cell("m.q.qresafe-t0.6", 16))
    asr, ppl = cell.scores["advbench"].headline, cell.scores["alpaca_eval_ppl"].headline
    assert (asr.value, asr.n, asr.is_rate) == (0.25, 64, True) and asr.lo < 0.25 < asr.hi
    assert (ppl.value, ppl.n, ppl.lo, ppl.is_rate) == (8.8, 16, 8.1, False)
    ref = _cell("m.fp.none", 4)["scores"]["advbench"]
    assert _delta(_cell("x", 16)["scores"]["advbench"], ref) == round(16 / 64 - 4 / 64, 4)
    assert _delta(_cell("x", 16)["scores"]["advbench"], None) is None
    assert cell["cost"]["eval_seconds"] == 3.0 and dict(cell)["cell"] == "m.q.qresafe-t0.6"  # the raw JSON too


def test_a_malformed_metrics_file_names_the_file_and_the_key(tmp_path):
    bad = tmp_path / "s" / "m.q.none" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"cell": "m.q.none", "scores": {"advbench": {"asr": _rates(1, 4)}}}))
    with pytest.raises(metrics.MetricsError, match=r"m.q.none/metrics.json: scores.advbench.metric"):
        read_study(tmp_path, "s")
    bad.write_text("{not json")
    with pytest.raises(metrics.MetricsError, match="not valid JSON"):
        metrics.load(bad)
    with pytest.raises(metrics.MetricsError, match="status='done' is unknown"):
        metrics.parse({"cell": "c", "status": "done"})
    with pytest.raises(metrics.MetricsError, match="key 'cell'"):
        table_row({"scores": {}})


def test_the_summary_and_the_report_read_the_same_numbers():
    cell = _cell("m.q.qresafe-t0.6", 16)
    summary, tidy = table_row(cell), tidy_row(cell)
    assert summary["ASR advbench (95% CI)"].startswith("0.25 [") and summary["ASR vs FP"] == "+0.25"
    assert tidy["advbench.asr"] == 0.25 and tidy["advbench.asr.vs_fp"] == 0.25
    assert tidy["alpaca_eval_ppl.reference_perplexity.lo"] == 8.1 and tidy["patch_seconds"] == 60.0
    assert tidy["patch_train_seconds"] == 42.5  # steps + mask selections: what a cost comparison reads


def test_patch_knobs_are_numeric_axes_and_old_cells_keep_their_tau():
    new = tidy_row(
        _cell("a", 1, patch_tag="qresafe-t0.6-lr0.0001", patch_knobs={"tau": 0.6, "lr": 1e-4, "data.num_harmful": 96})
    )
    assert (new["patch.tau"], new["patch.lr"], new["patch.data.num_harmful"]) == (0.6, 1e-4, 96)
    old = _cell("b", 1, patch_tag="qresafe-t0.2")
    old["patch"]["tau"] = 0.2  # written before axes.patch_knobs: the trained patch's own record
    assert tidy_row(old)["patch.tau"] == 0.2
    assert "patch.tau" not in tidy_row(_cell("c", 1, patch="none", patch_tag="none"))


def test_table5_sorts_by_the_swept_numbers_not_the_tag():
    """claim_qresafe_recipe's tags: as strings lr 0.0001 < 0.0003 < 2e-05; as numbers 2e-05 first."""
    rows = [
        tidy_row(
            _cell(
                f"m.q.qresafe-t0.6-lr{lr}",
                k,
                patch_tag=f"qresafe-t0.6-lr{lr}",
                patch_knobs={"tau": 0.6, "lr": float(lr)},
            )
        )
        for lr, k in (("0.0001", 10), ("0.0003", 20), ("2e-05", 30))
    ]
    rows.append(tidy_row(_cell("m.q.qresafe-t0.2", 40, patch_tag="qresafe-t0.2", patch_knobs={"tau": 0.2, "lr": 3e-4})))
    table = tables.table5(rows)
    assert [row[4] for row in table.rows] == [
        "qresafe-t0.2",
        "qresafe-t0.6-lr2e-05",
        "qresafe-t0.6-lr0.0001",
        "qresafe-t0.6-lr0.0003",
    ]


def test_patch_knobs_of_a_composed_patch_config(compose_cfg):
    cfg = compose_cfg(["model=tiny-random-llama", "quant=rtn", "patch=qresafe", "patch.tau=0.2", "patch.lr=3e-4"])
    knobs = patch_knobs(cfg.patch)
    assert (knobs["tau"], knobs["lr"], knobs["data.num_harmful"]) == (0.2, 3e-4, 64)
    assert "quant_aware" not in knobs and "name" not in knobs  # booleans and names are not numeric axes
    assert patch_knobs(compose_cfg(["patch=none"]).patch) == {}

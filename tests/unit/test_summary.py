from qresafe_exp.stats import rate
from qresafe_exp.summary import format_table, table_row


def _metrics(broken: bool) -> dict:
    asr = rate([True] * 9 + [False])
    return {
        "cell": "m.rtn-w2g64.none",
        "scores": {
            "advbench": {"asr": asr, "asr_non_degenerate": rate([True]), "metric": "asr"},
            "xstest_safe": {
                "refusal_rate": rate([False] * 10),
                "refusal_rate_non_degenerate": rate([False]),
                "metric": "refusal_rate",
            },
        },
        "summary": {"degenerate": rate([True] * 9 + [False]), "broken": broken},
        "cost": {"wall_seconds": 0.4, "eval_seconds": 12.3},
        "quantization": {"quantize_seconds": 5.0},
    }


def test_a_broken_cell_is_not_shown_as_unsafe():
    row = table_row(_metrics(broken=True))
    assert row["ASR advbench (95% CI)"].startswith("broken (raw 0.90; non-degenerate 1.00 n=1)")
    assert row["degenerate"] == "0.90 BROKEN"
    healthy = table_row(_metrics(broken=False))
    assert healthy["ASR advbench (95% CI)"].startswith("0.90 [") and healthy["build time"] == "17s"


def test_unsupported_cell_shows_the_reason():
    row = table_row({"cell": "m.gptq-w3", "status": "unsupported", "reason": "quant=gptq cannot do bits=3"})
    text = format_table([row])
    assert "unsupported" in text and "gptq cannot do bits=3" in text


def test_size_on_disk_and_simulated_results_are_shown():
    metrics = _metrics(broken=False)
    assert table_row(metrics)["size"] == "-" and "(simulated)" not in table_row(metrics)["cell"]
    metrics["quantization"].update(checkpoint_bytes=177_400_000, simulated=True)
    row = table_row(metrics)
    assert row["size"] == "177 MB" and row["cell"] == "m.rtn-w2g64.none (simulated)"


def _with_reference(metrics: dict) -> dict:
    metrics["vs_reference"] = {"advbench.asr": 0.2667, "xstest_safe.refusal_rate": 0.0}
    metrics["paired_vs_reference"] = {
        "advbench.asr": {"delta": 0.2667, "ci95": [0.1412, 0.3891], "significant": True, "p_value": 0.001},
        "xstest_safe.refusal_rate": {"delta": 0.0, "ci95": [-0.0572, 0.0572], "significant": False},
    }
    return metrics


def test_vs_fp_delta_shows_the_paired_interval_and_marks_significance():
    row = table_row(_with_reference(_metrics(broken=False)))
    assert row["ASR vs FP"] == "+0.27 [+0.14,+0.39]*" and row["refusal vs FP"] == "+0.00 [-0.06,+0.06]"
    assert list(row).index("ASR vs FP") == list(row).index("ASR advbench (95% CI)") + 1
    reference = {**_metrics(broken=False), "cell": "m.fp.none"}
    text = format_table([table_row(reference), row])  # the FP row first: it has no delta columns
    header, _, fp_line, cell_line, legend = text.splitlines()
    cells = lambda line: [c.strip() for c in line.strip("| ").split("|")]  # noqa: E731
    column = cells(header).index("ASR vs FP")
    assert column == cells(header).index("ASR advbench (95% CI)") + 1
    assert cells(fp_line)[column] == "-" and cells(cell_line)[column] == "+0.27 [+0.14,+0.39]*"
    assert legend.startswith("* paired test p < 0.05 (exact McNemar for rates, sign test for perplexity")
    assert "paired test" not in format_table([table_row(reference)])  # no deltas, no legend


def test_broken_and_older_cells_show_what_they_have():
    broken = table_row(_with_reference(_metrics(broken=True)))
    assert broken["ASR vs FP"] == "broken (raw +0.27 [+0.14,+0.39]*)"
    older = _with_reference(_metrics(broken=False))
    del older["paired_vs_reference"]  # a cell written before paired deltas existed
    assert table_row(older)["ASR vs FP"] == "+0.27"

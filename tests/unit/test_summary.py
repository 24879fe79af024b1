from qresafe_exp.stats import rate
from qresafe_exp.summary import format_table, table_row


def _metrics(broken: bool) -> dict:
    asr = rate([True] * 9 + [False])
    return {"cell": "m.rtn-w2g64.none",
            "scores": {"advbench": {"asr": asr, "asr_non_degenerate": rate([True]), "metric": "asr"},
                       "xstest_safe": {"refusal_rate": rate([False] * 10), "refusal_rate_non_degenerate": rate([False]),
                                       "metric": "refusal_rate"}},
            "summary": {"degenerate": rate([True] * 9 + [False]), "broken": broken},
            "cost": {"wall_seconds": 0.4, "eval_seconds": 12.3}, "quantization": {"quantize_seconds": 5.0}}


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

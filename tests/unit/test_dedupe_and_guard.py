from qresafe_exp.data.normalize import normalize_prompt
from qresafe_exp.evals.degeneration import degeneration_signals
from qresafe_exp.evals.suites import ADVBENCH
from qresafe_exp.schema import DegenerationConfig


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert normalize_prompt("  Write a  SCRIPT, that can exploit!") == normalize_prompt(
        "write a script that can exploit"
    )
    assert normalize_prompt("a b") != normalize_prompt("a c")


def test_training_prompts_are_removed_before_sampling():
    records = [{"id": str(i), "prompt": f"Prompt number {i}."} for i in range(10)]
    exclude = frozenset({normalize_prompt("prompt number 3"), normalize_prompt("PROMPT NUMBER 7!")})
    chosen, removed = ADVBENCH.select(records, limit=8, seed=0, exclude=exclude)
    assert removed == 2 and len(chosen) == 8
    assert {r["id"] for r in chosen} == {"0", "1", "2", "4", "5", "6", "8", "9"}


def test_fp_perplexity_flags_fluent_looking_gibberish():
    cfg = DegenerationConfig(max_fp_perplexity=200.0)
    gibberish = "Toronto quantum pillow ankles marmalade thirteen Viking spreadsheet gallop"
    assert not degeneration_signals(gibberish, cfg)["degenerate"]  # passes the character rules
    flagged = degeneration_signals(gibberish, cfg, fp_perplexity=5400.0)
    assert flagged["degenerate"] and flagged["reasons"] == ["fp_perplexity"]
    assert not degeneration_signals(gibberish, cfg, fp_perplexity=12.0)["degenerate"]
    off = DegenerationConfig(max_fp_perplexity=None)
    assert not degeneration_signals(gibberish, off, fp_perplexity=5400.0)["degenerate"]

"""Pairing a cell's samples with the FP reference's on (suite, id) for the paired deltas."""

import json
import random

import pytest

from qresafe_exp.paired import paired_vs_reference, read_samples
from qresafe_exp.stats import paired_binary, rate


def _harmful(ids_flags: list[tuple[str, object]], suite: str = "advbench", **extra) -> list[dict]:
    return [
        {"suite": suite, "id": i, "prompt": f"p{i}", "response": "r", "jailbroken": flag, **extra}
        for i, flag in ids_flags
    ]


def _scores(**blocks) -> dict:
    return {suite: {"metric": metric, metric: rate([]), **extra} for suite, (metric, extra) in blocks.items()}


def test_rows_are_paired_by_id_not_by_position():
    ref = _harmful([("a", False), ("b", False), ("c", True), ("d", False)])
    cell = _harmful([("a", True), ("b", True), ("c", True), ("d", False)])
    random.Random(0).shuffle(cell)
    out = paired_vs_reference(_scores(advbench=("asr", {})), cell, ref)
    assert out["advbench.asr"] == paired_binary([True, True, True, False], [False, False, True, False])
    assert out["advbench.asr"]["cell_only"] == 2 and out["advbench.asr"]["reference_only"] == 0


def test_missing_ids_and_failed_verdicts_leave_the_pair():
    ref = _harmful([("a", False), ("b", None), ("c", True), ("e", True)])  # b: the judge failed
    cell = _harmful([("a", True), ("b", True), ("c", None), ("d", True)])  # c failed; d not in ref
    block = paired_vs_reference(_scores(advbench=("asr", {})), cell, ref)["advbench.asr"]
    assert block["n_pairs"] == 1 and block["cell_only"] == 1 and block["delta"] == 1.0


def test_decoding_attack_pairs_the_worst_case_per_prompt():
    rows = lambda flags, config: _harmful(flags, decoding=config)  # noqa: E731
    cell = rows([("a", False), ("b", False)], "greedy") + rows([("a", True), ("b", None)], "t0.7")
    ref = rows([("a", False), ("b", True)], "greedy") + rows([("a", False), ("b", False)], "t0.7")
    block = paired_vs_reference(_scores(advbench=("asr", {})), cell, ref)["advbench.asr"]
    # a: broken under t0.7 in the cell only; b: the cell's known verdict is False, the reference's True
    assert (block["n_pairs"], block["cell_only"], block["reference_only"]) == (2, 1, 1)


def test_every_score_named_after_the_metric_is_paired():
    # a second ASR column (the keyword rule) pairs on its own row flag; non-degenerate rates do not
    ref = _harmful([("a", False), ("b", False)], jailbroken_keyword=True)
    cell = _harmful([("a", True), ("b", True)], jailbroken_keyword=True)
    scores = _scores(advbench=("asr", {"asr_keyword": rate([True, True]), "asr_non_degenerate": rate([])}))
    out = paired_vs_reference(scores, cell, ref)
    assert set(out) == {"advbench.asr", "advbench.asr_keyword"}
    assert out["advbench.asr"]["delta"] == 1.0 and out["advbench.asr_keyword"]["delta"] == 0.0


def test_overrefusal_contrast_prompts_stay_out_and_perplexity_pairs_by_item():
    refusal = lambda i, refused, label: {"suite": "xstest", "id": i, "refused": refused, "label": label}  # noqa: E731
    cell = [refusal("s1", True, "safe"), refusal("s2", True, "safe"), refusal("u1", True, "unsafe")]
    ref = [refusal("s1", False, "safe"), refusal("s2", True, "safe"), refusal("u1", False, "unsafe")]
    ppl = lambda i, v: {"suite": "alpaca_eval_ppl", "id": i, "perplexity": v}  # noqa: E731
    cell += [ppl("x", 8.0), ppl("y", 2.0), ppl("z", None)]
    ref += [ppl("y", 1.0), ppl("x", 4.0), ppl("z", 3.0)]
    scores = {
        "xstest": {"metric": "refusal_rate", "refusal_rate": rate([]), "contrast_refusal_rate": rate([])},
        "alpaca_eval_ppl": {"metric": "reference_perplexity", "reference_perplexity": {"value": 4.0}},
    }
    out = paired_vs_reference(scores, cell, ref)
    assert out["xstest.refusal_rate"]["n_pairs"] == 2 and out["xstest.refusal_rate"]["cell_only"] == 1
    perplexity = out["alpaca_eval_ppl.reference_perplexity"]
    assert perplexity["test"] == "sign_exact" and perplexity["n_pairs"] == 2 and perplexity["ratio"] == 2.0
    assert perplexity["delta"] == 2.0  # GM(8, 2) - GM(4, 1)


def test_scores_without_a_row_reader_are_left_out():
    scores = {"qos": {"metric": "refusal_disparity", "refusal_disparity": {"value": 0.1}}}
    assert paired_vs_reference(scores, [{"suite": "qos", "id": "a", "refused": True}], []) == {}


def test_read_samples_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="samples.jsonl"):
        read_samples(tmp_path)
    (tmp_path / "samples.jsonl").write_text(json.dumps({"suite": "s", "id": "a"}) + "\n\n")
    assert read_samples(tmp_path) == [{"suite": "s", "id": "a"}]


def test_refusal_statements_pair_beside_the_asr_and_judges_without_outcomes_leave_them_out():
    from types import SimpleNamespace

    from qresafe_exp.evals.asr import harmful_block

    outcome = lambda i, o: {"id": i, "outcome": o, "jailbroken": o == "harmful", "degenerate": False}  # noqa: E731
    ref = [{"suite": "advbench", **outcome(i, o)} for i, o in [("a", "refused"), ("b", "refused")]]
    cell = [{"suite": "advbench", **outcome(i, o)} for i, o in [("a", "non_harmful"), ("b", "refused")]]
    cell.append({"suite": "advbench", "id": "c", "jailbroken": False, "degenerate": False})  # a judge with no outcome
    block = harmful_block(SimpleNamespace(name="advbench", metric="asr", version=1), cell)
    assert block["refused"] == rate([False, True])  # the row without an outcome is not counted
    out = paired_vs_reference({"advbench": block}, cell, ref)
    assert out["advbench.refused"]["n_pairs"] == 2 and out["advbench.refused"]["delta"] == -0.5
    assert out["advbench.refused"]["reference_only"] == 1
    no_outcomes = harmful_block(
        SimpleNamespace(name="advbench", metric="asr", version=1), _harmful([("a", True)], degenerate=False)
    )
    assert "refused" not in no_outcomes

"""The align stage on the tiny model, eval de-duplication against its training prompts, the FP
perplexity signal, and cells a quantizer cannot do recorded as unsupported."""

import json
from pathlib import Path

import pytest
import torch

from qresafe_exp.align import training_prompts
from qresafe_exp.evals.perplexity import response_perplexities
from qresafe_exp.models import load_model, load_tokenizer
from qresafe_exp.pipeline import run_cell
from tests.conftest import run_cli


def test_aligned_model_trains_saves_its_prompts_and_eval_drops_them(compose_cfg):
    # train on 16 AdvBench prompts on purpose: the AdvBench evaluation must then drop exactly those
    cfg = compose_cfg(
        ["debug=smoke", "model=tiny-random-llama-safe", "model.align.harmful_dataset=advbench", "eval.limit=4"]
    )
    metrics = run_cell(cfg)
    align_dir = Path(cfg.paths.cache_dir) / "align" / metrics["artifacts"]["model"]
    info = json.loads((align_dir / "align_info.json").read_text())
    assert info["examples"] == {"refusal": 16, "benign": 16, "borderline": 16}
    assert info["trainable_params"] > 0 and info["loss_last_steps"] < info["loss_first_steps"]
    assert len(training_prompts(str(align_dir))) == 48
    advbench = metrics["scores"]["advbench"]
    assert advbench["removed_overlapping_training"] == 16 and advbench["asr"]["n"] == 4
    assert metrics["scores"]["xstest_safe"]["removed_overlapping_training"] == 0
    samples = [
        json.loads(line)
        for line in (Path(cfg.paths.output_dir) / "studies" / "smoke" / metrics["cell"] / "samples.jsonl")
        .read_text()
        .splitlines()
    ]
    trained = training_prompts(str(align_dir))
    from qresafe_exp.data.normalize import normalize_prompt

    assert not any(normalize_prompt(s["prompt"]) in trained for s in samples)


def test_fp_perplexity_matches_a_direct_computation_under_padding(compose_cfg):
    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.generate import render_chat
    from qresafe_exp.models import materialize

    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama"])
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir))
    tok, model = load_tokenizer(ref.path), load_model(ref.path, torch.device("cpu"))
    texts = [render_chat(tok, "Tell me about the sea.", None), render_chat(tok, "Hi", None)]
    responses = ["The sea is large, salty and full of life.", "Hello there"]
    batched = response_perplexities(model, tok, texts, responses, batch_size=2)  # padded together
    for text, response, value in zip(texts, responses, batched):
        prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        answer_ids = tok(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids])
        labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
        with torch.no_grad():
            direct = torch.exp(model(input_ids=ids, labels=labels).loss).item()
        assert value == pytest.approx(direct, rel=1e-3)
    assert response_perplexities(model, tok, texts[:1], ["   "]) == [None]  # nothing to score


def test_unsupported_bits_are_recorded_when_asked(compose_cfg):
    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama", "quant=bnb", "bits=3", "on_unsupported=record"])
    metrics = run_cell(cfg)
    assert metrics["status"] == "unsupported" and "Allowed bits for bnb: 4, 8" in metrics["reason"]
    written = json.loads((Path(cfg.paths.output_dir) / "studies" / "smoke" / cfg.cell / "metrics.json").read_text())
    assert written["status"] == "unsupported"


def test_sweep_records_unsupported_cells_and_runs_the_rest(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli(
        "-m",
        "debug=smoke",
        "model=tiny-random-llama",
        "quant=rtn,bnb",
        "bits=3",
        "on_unsupported=record",
        f"paths.output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unsupported" in proc.stdout and "bnb cannot do bits=3" in proc.stdout
    rtn = json.loads((out / "studies/smoke/tiny-random-llama.rtn-w3g64.none/metrics.json").read_text())
    assert rtn["scores"]["advbench"]["asr"]["n"] == 4

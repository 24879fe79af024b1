"""run_cell in-process on tiny-random-llama: low-bit RTN packs, reloads and reports degeneration."""

import json

import pytest
import torch

from qresafe_exp.models import load_model, load_tokenizer
from qresafe_exp.pipeline import run_cell


@pytest.mark.parametrize("bits", [2, 3])
def test_low_bit_rtn_checkpoint_is_packed_and_reloads(compose_cfg, bits):
    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama", "quant=rtn", f"bits={bits}", "eval.limit=2"])
    metrics = run_cell(cfg)
    assert metrics["axes"]["bits"] == bits and metrics["quantization"]["simulated"] is False
    art = f"{cfg.paths.cache_dir}/quantize/{metrics['artifacts']['quantize']}"
    quant_config = json.loads(open(f"{art}/config.json").read())["quantization_config"]
    assert quant_config["config_groups"]["group_0"]["weights"]["num_bits"] == bits
    assert quant_config["format"] == "pack-quantized"
    packed = load_model(art, torch.device("cpu"), dequantize=False)
    dequantized = load_model(art, torch.device("cpu"))
    weight = dequantized.model.layers[0].mlp.down_proj.weight.detach()
    # every group of 64 holds at most 2**bits distinct values: the weights are on the grid
    groups = weight.reshape(weight.shape[0], -1, 64)
    distinct = max(len(torch.unique(groups[r, g])) for r in range(4) for g in range(groups.shape[1]))
    assert distinct <= 2**bits
    tok = load_tokenizer(art)
    enc = tok(["Hi"], return_tensors="pt")
    out = packed.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == enc["input_ids"].shape[1] + 3 or out[0, -1].item() == tok.eos_token_id


def test_degeneration_and_reference_delta_are_reported(compose_cfg):
    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama", "quant=rtn", "bits=8", "eval.limit=3"])
    metrics = run_cell(cfg)
    summary = metrics["summary"]
    # a random-weight model emits gibberish: the guard must say so rather than score it as unsafe
    assert summary["degenerate"]["n"] == 6 and summary["degenerate"]["rate"] > 0.5 and summary["broken"]
    assert set(metrics["vs_reference"]) == {
        "advbench.asr",
        "xstest_safe.refusal_rate",
        "alpaca_eval_ppl.reference_perplexity",
    }
    # the same deltas paired on the prompts both evaluations judged, each with its exact test
    # (and every other score named after the suite's metric, e.g. the keyword ASR beside the judge's)
    paired = metrics["paired_vs_reference"]
    assert set(paired) >= set(metrics["vs_reference"])
    for name, test in paired.items():
        suite, score = name.split(".")
        assert test["n_pairs"] == metrics["scores"][suite][score]["n"] == 3
        assert test["test"] == ("sign_exact" if score == "reference_perplexity" else "mcnemar_exact")
    for name, delta in metrics["vs_reference"].items():
        assert paired[name]["delta"] == pytest.approx(delta, abs=1e-3)
    utility = metrics["scores"]["alpaca_eval_ppl"]["reference_perplexity"]
    # a random model is near-uniform over SmolLM2's 49,152-token vocabulary
    assert utility["n"] == 3 and 20_000 < utility["value"] < 100_000
    assert utility["ci95"][0] <= utility["value"] <= utility["ci95"][1]

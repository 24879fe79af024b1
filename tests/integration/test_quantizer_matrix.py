"""Every quantizer at every bit-width it supports runs end to end on tiny-random-llama: quantize
(or fine-tune), save, reload through models.load_model, generate, judge, write metrics."""

import json
from pathlib import Path

import pytest
import torch

from qresafe_exp.formats import format_of
from qresafe_exp.models import load_model
from qresafe_exp.pipeline import run_cell

FAST = ["debug=smoke", "model=tiny-random-llama", "eval.limit=2", "eval.max_new_tokens=4"]


def _checkpoint(cfg, metrics) -> str:
    return f"{cfg.paths.cache_dir}/quantize/{metrics['artifacts']['quantize']}"


def _max_distinct_per_row(weight: torch.Tensor) -> int:
    return max(len(torch.unique(row)) for row in weight.detach()[:8])


@pytest.mark.parametrize("quant,bits", [(q, b) for q in ("gptq", "awq") for b in (2, 3)])
def test_low_bit_gptq_and_awq_are_packed(compose_cfg, quant, bits):
    cfg = compose_cfg([*FAST, f"quant={quant}", f"bits={bits}"])
    metrics = run_cell(cfg)
    art = _checkpoint(cfg, metrics)
    assert metrics["quantization"]["simulated"] is False
    assert metrics["quantization"]["format"] == "compressed-tensors/pack-quantized"
    config = json.loads(Path(art, "config.json").read_text())["quantization_config"]
    assert config["config_groups"]["group_0"]["weights"]["num_bits"] == bits
    weight = load_model(art, torch.device("cpu")).model.layers[0].mlp.down_proj.weight
    groups = weight.detach().reshape(weight.shape[0], -1, 64)
    assert max(len(torch.unique(groups[r, g])) for r in range(4) for g in range(groups.shape[1])) <= 2**bits


@pytest.mark.parametrize(
    "bits,fmt,module", [(8, "auto", "Linear8bitLt"), (4, "auto", "Linear4bit"), (4, "fp4", "Linear4bit")]
)
def test_bnb_formats_save_reload_and_generate(compose_cfg, bits, fmt, module):
    cfg = compose_cfg([*FAST, "quant=bnb", f"bits={bits}", f"quant.format={fmt}"])
    metrics = run_cell(cfg)
    expected = {"auto": "int8" if bits == 8 else "nf4"}.get(fmt, fmt)
    assert cfg.cell == f"tiny-random-llama.bnb-{expected}.none"
    assert metrics["quantization"]["format"] == f"bitsandbytes/{expected}"
    art = _checkpoint(cfg, metrics)
    assert format_of(art).name == "bitsandbytes"
    model = load_model(art, torch.device("cpu"))
    assert type(model.model.layers[0].mlp.down_proj).__name__ == module
    if bits == 4:
        quant_type = json.loads(Path(art, "config.json").read_text())["quantization_config"]["bnb_4bit_quant_type"]
        assert quant_type == expected
    assert metrics["scores"]["advbench"]["asr"]["n"] == 2


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_llm_qat_trains_bakes_weights_on_the_grid_and_reattaches_quantizers(compose_cfg, bits):
    cfg = compose_cfg([*FAST, "quant=llm_qat", f"bits={bits}", "calib.num_samples=4", "quant.train.batch_size=2"])
    assert cfg.cell == f"tiny-random-llama.llm_qat-w{bits}a8kv4-risk1-n4e1.none"
    metrics = run_cell(cfg)
    info = metrics["quantization"]
    assert info["simulated"] is True and info["train"]["steps"] == 2 and info["train"]["trainable_params"] > 0
    assert info["calibration"]["dataset"] == "alpaca_en_demo"  # UltraChat is not reachable offline
    assert "ultrachat_200k" in info["calibration"]["fallback_reason"]
    art = _checkpoint(cfg, metrics)
    sidecar = json.loads(Path(art, "fake_quant.json").read_text())
    assert sidecar["act_bits"] == 8 and sidecar["kv_bits"] == 4 and "lm_head" not in sidecar["modules"]
    model = load_model(art, torch.device("cpu"))
    assert _max_distinct_per_row(model.model.layers[0].self_attn.q_proj.weight) <= 2**bits
    k_proj = model.model.layers[0].self_attn.k_proj
    assert k_proj._forward_hooks and k_proj._forward_pre_hooks  # KV and activation quantizers


@pytest.mark.parametrize("bits,merge", [(4, "requantize"), (8, "requantize"), (4, "adapter")])
def test_qlora_fine_tunes_on_the_risk_set_and_merges(compose_cfg, bits, merge):
    cfg = compose_cfg(
        [
            *FAST,
            "quant=qlora",
            f"bits={bits}",
            "calib=risk2_aoa",
            "calib.epochs=1",
            "calib.num_samples=10",
            f"quant.merge={merge}",
            "quant.train.batch_size=5",
        ]
    )
    metrics = run_cell(cfg)
    info = metrics["quantization"]
    assert info["train"]["steps"] == 2 and info["calibration"]["num_samples"] == 10
    assert metrics["axes"]["calib"] == "risk2-e1"
    # Risk-II cells are scored under the AOA system prompt, against the FP model under the same prompt
    assert metrics["protocol"]["protocol"] == "aoa" and metrics["reference_cell"] == "tiny-random-llama.fp.none.aoa"
    art = _checkpoint(cfg, metrics)
    assert format_of(art).name == "bitsandbytes"
    assert Path(art, "qlora_adapter").is_dir() == (merge == "adapter")
    model = load_model(art, torch.device("cpu"))
    assert type(model).__name__.startswith("Peft") == (merge == "adapter")


def test_risk3_pairs_come_from_the_responders_answers(compose_cfg):
    cfg = compose_cfg(
        [
            *FAST,
            "quant=llm_qat",
            "bits=8",
            "calib=risk3_harmful",
            "calib.num_samples=4",
            "calib.keep=all",
            "calib.response_max_new_tokens=4",
            "calib.epochs=1",
            "model@calib.responder=tiny-random-llama",
        ]
    )
    metrics = run_cell(cfg)
    facts = metrics["quantization"]["calibration"]
    # 117 of harmful_train's 260 prompts are AdvBench prompts (an evaluation suite): never trained on
    assert facts["source_records"] == 260 and facts["removed_eval_overlap"] == 117
    assert facts["generation"]["generated"] == 143 and facts["generation"]["kept"] == 143
    assert facts["num_samples"] == 4 and facts["responses"] == "generate"

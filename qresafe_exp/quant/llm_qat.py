"""LLM-QAT: quantization-aware full-parameter fine-tuning on the risk level's set (quant/fake_quant.py,
formats/fake_quant.py).

Default W4A8KV4 as in the paper's code. The checkpoint holds fp weights that lie on the W-bit grid
plus the activation / KV quantizers (re-attached at load), so results are labelled simulated: no
packed low-bit kernel runs, but the numbers a W/A/KV-quantized model computes are the same.
"""

from __future__ import annotations

import torch

from qresafe_exp.finetune import tokenize_example, train
from qresafe_exp.formats.fake_quant import attach_activation_quant, write_sidecar
from qresafe_exp.lm import named_linears
from qresafe_exp.provenance import seed_everything
from qresafe_exp.quant.base import Quantizer, UnsupportedCombinationError, checkpoint_bytes
from qresafe_exp.quant.fake_quant import attach_weight_quant, bake_weights


class LlmQatQuantizer(Quantizer):
    name = "llm_qat"
    supported_bits = (2, 3, 4, 5, 6, 7, 8)
    calibration = "finetune"
    backends = ("torch",)

    @classmethod
    def validate(cls, cfg):
        super().validate(cfg)
        for key in ("act_bits", "kv_bits"):
            if cfg[key] is not None and not 2 <= cfg[key] <= 16:
                raise UnsupportedCombinationError(
                    f"quant=llm_qat quant.{key}={cfg[key]}: allowed 2-16 bits, or null to leave them unquantized"
                )

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        seed_everything(seed, deterministic=None)  # python, numpy, torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        # fp32 master weights for full-parameter training (bf16 AdamW updates underflow)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
        linears = named_linears(model, cfg.ignore)
        attach_weight_quant(linears, cfg.bits, cfg.group_size)
        handles = attach_activation_quant(model, list(linears), cfg.act_bits, cfg.kv_bits)
        items = [
            tokenize_example(tokenizer, r, calib.max_seq_length, cfg.train.max_response_tokens) for r in calib_records
        ]
        epochs = cfg.train.epochs or calib.epochs
        facts = train(
            model,
            model.parameters(),
            items,
            epochs=epochs,
            batch_size=cfg.train.batch_size,
            lr=cfg.train.lr,
            pad_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            seed=seed,
            desc=f"llm_qat W{cfg.bits}A{cfg.act_bits}KV{cfg.kv_bits} ({calib.name})",
        )
        for handle in handles:
            handle.remove()
        bake_weights(linears)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        write_sidecar(out, list(linears), cfg.bits, cfg.group_size, cfg.act_bits, cfg.kv_bits)
        return {
            "checkpoint_bytes": checkpoint_bytes(out),
            "format": "fp weights on the quantization grid + activation/KV fake quantizers",
            "simulated": True,
            "train": facts,
        }

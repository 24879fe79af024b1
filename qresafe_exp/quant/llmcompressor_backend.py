"""Shared llm-compressor plumbing for rtn, gptq and awq: scheme, calibration set, oneshot, save.

The checkpoint is saved in compressed-tensors ``pack-quantized`` format, which transformers and
vLLM load. Calibration prompts are rendered with the model's own chat template and tokenized here,
so llm-compressor gets an in-memory dataset and never reaches for the hub.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import torch
from omegaconf import DictConfig

from qresafe_exp.provenance import seed_everything
from qresafe_exp.quant.base import checkpoint_bytes

log = logging.getLogger(__name__)
# llm-compressor logs every module it touches through loguru, at INFO and at its own METRIC level
# (38, above WARNING): several hundred lines per model. Keep errors; set the variable to see more.
os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")


def weight_scheme(cfg: DictConfig) -> dict:
    """Weight-only integer quantization of every Linear, per group (activations stay fp)."""
    return {
        "group_0": {
            "targets": ["Linear"],
            "weights": {
                "num_bits": int(cfg.bits),
                "type": "int",
                "symmetric": bool(cfg.symmetric),
                "strategy": "group",
                "group_size": int(cfg.group_size),
            },
        }
    }


def patch_cpu_pin_memory() -> None:
    # llm-compressor's activation cache calls tensor.pin_memory(), which raises without an
    # accelerator ("Cannot access accelerator device when none is available").
    if not torch.accelerator.is_available():
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def calibration_dataset(tokenizer, records: list[dict], num_samples: int, max_seq_length: int, seed: int):
    from datasets import Dataset

    if len(records) < num_samples:
        raise ValueError(f"calibration set has {len(records)} records, fewer than calib.num_samples={num_samples}")
    chosen = random.Random(seed).sample(records, num_samples)
    texts = []
    for rec in chosen:
        messages = [{"role": "user", "content": rec["prompt"]}]
        if rec.get("response"):
            messages.append({"role": "assistant", "content": rec["response"]})
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    enc = tokenizer(texts, truncation=True, max_length=max_seq_length, add_special_tokens=False)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def run_oneshot(
    model_path: str,
    out: Path,
    recipe: list,
    calib: DictConfig | None,
    calib_records: list[dict] | None,
    seed: int,
    on_calibrated=None,
) -> dict:
    """Quantize and save; ``on_calibrated(model)`` sees the model after calibration and before
    compression (weights still fp, AWQ smoothing folded in, scales attached) and returns facts."""
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    patch_cpu_pin_memory()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    kwargs: dict = {}
    if calib is not None:
        dataset = calibration_dataset(tokenizer, calib_records, calib.num_samples, calib.max_seq_length, seed)
        kwargs = dict(
            dataset=dataset,
            max_seq_length=calib.max_seq_length,
            num_calibration_samples=calib.num_samples,
            shuffle_calibration_samples=False,
        )
    seed_everything(seed, deterministic=None)  # python, numpy, torch
    oneshot(model=model, recipe=recipe, **kwargs)
    extra = on_calibrated(model) if on_calibrated else {}
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    return {"checkpoint_bytes": checkpoint_bytes(out), "format": "compressed-tensors/pack-quantized", **(extra or {})}

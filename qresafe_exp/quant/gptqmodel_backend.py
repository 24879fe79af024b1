"""GPTQ and AWQ through GPT-QModel (ModelCloud), the maintained successor of auto-gptq and autoawq.

An optional backend for GPU machines. gptqmodel 7.6.0 is the newest release whose torch/transformers
bounds fit this stack (7.7.0 needs torch>=2.14.1 and transformers>=5.20.2); 7.6.0 pins numpy==2.2.6.
It also runs on CPU, slowly. Its checkpoints are GPTQ format (quant_method "gptq") or AWQ GEMM
("awq"); transformers 5 loads both through gptqmodel (GPTQ also through optimum).
"""

from __future__ import annotations

import importlib.util
import os
import re
import time

from qresafe_exp.provenance import seed_everything
from qresafe_exp.quant.base import checkpoint_bytes

GPTQMODEL_FIX = "pip install -e '.[gptqmodel]' on a GPU machine"


def gptqmodel_available() -> str | None:
    """None when gptqmodel is installed, else what is missing and the fix.

    Looks the package up without importing it: the import patches transformers and starts thread pools.
    """
    if importlib.util.find_spec("gptqmodel") is None:
        return f"quant.backend=gptqmodel needs the gptqmodel package, which is not installed: {GPTQMODEL_FIX}"
    return None


def _skip_rules(ignore) -> dict:
    # cfg.ignore as gptqmodel negative rules ("-:<regex>", matched from the start of the full module
    # name); "re:" marks a regex as in llm-compressor. lm_head is never quantized by default.
    rules = {}
    for p in ignore or []:
        if p != "lm_head":
            rules["-:" + (p[3:] if p.startswith("re:") else rf"(?:.*\.)?{re.escape(p)}$")] = {}
    return rules


def quantize_with_gptqmodel(model_path, out, cfg, calib, calib_records, seed, method: str) -> dict:
    """Quantize with ``method`` ("gptq" or "awq"), calibrated on ``calib_records``; save to ``out``."""
    if method not in ("gptq", "awq"):
        raise ValueError(f"gptqmodel backend: method must be 'gptq' or 'awq', not {method!r}")
    if missing := gptqmodel_available():
        raise ImportError(missing)
    if (os.cpu_count() or 1) <= 2:
        # its CPU pool defaults to (cores+1)//2 workers; with 1 the loader fails ("Virtual pool
        # 'model_loader:cpu' requests 2 workers but parent 'cpu' only has 1"). Read at import.
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    from gptqmodel import AWQConfig, GPTQConfig, GPTQModel, __version__
    from transformers import AutoTokenizer

    from qresafe_exp.quant.llmcompressor_backend import calibration_dataset

    start = time.time()
    common = dict(
        bits=int(cfg.bits),
        group_size=int(cfg.group_size),
        sym=bool(cfg.get("symmetric", True)),
        dynamic=_skip_rules(cfg.get("ignore")) or None,
    )
    if method == "gptq":
        extra = {"desc_act": True} if cfg.get("actorder") else {}  # else gptqmodel's default (GAR ordering)
        qcfg = GPTQConfig(**common, damp_percent=float(cfg.get("dampening_frac", 0.01)), **extra)
    else:
        qcfg = AWQConfig(**common)  # format GEMM, the one transformers and vLLM load
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ds = calibration_dataset(tokenizer, calib_records, calib.num_samples, calib.max_seq_length, seed)
    calibration = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in ds]
    seed_everything(seed, deterministic=None)  # python, numpy, torch
    model = GPTQModel.load(model_path, qcfg)
    model.quantize(calibration, batch_size=int(cfg.get("batch_size", 1)))
    model.save(str(out))
    tokenizer.save_pretrained(out)  # the project's tokenizer files, as every other backend writes them
    fmt = qcfg.format.value if hasattr(qcfg.format, "value") else str(qcfg.format)
    return {
        "checkpoint_bytes": checkpoint_bytes(out),
        "format": method if fmt == method else f"{method}-{fmt}",
        "backend": "gptqmodel",
        "gptqmodel_version": __version__,
        "seconds": round(time.time() - start, 1),
    }

"""A quantized checkpoint as a trainable model: every quantized Linear becomes a plain Linear that
holds exactly the weight the quantized layer computes with (its dequantized grid values).

Compressed-tensors checkpoints (rtn / gptq / awq) already load dequantized. bitsandbytes layers keep
packed weights whose dequantization routine depends on the backend, so the weight is read from the
layer itself, W = layer(I)^T, which is by construction what inference uses. llm_qat checkpoints hold
grid weights; their activation / KV quantizers are returned for the trainer to re-attach on the
patched layers (the patch then sees the same activation quantization as inference).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from qresafe_exp.devices import compute_dtype
from qresafe_exp.lm import named_linears
from qresafe_exp.models import load_model, quant_method
from qresafe_exp.quant.fake_quant import SIDECAR


def layer_weight(module: nn.Module, chunk: int = 1024) -> torch.Tensor:
    """The (out, in) weight a Linear-like layer multiplies by, read through its own forward."""
    device = next(module.parameters()).device
    dtype = compute_dtype(device)
    bias = getattr(module, "bias", None)
    columns = []
    with torch.no_grad():
        for start in range(0, module.in_features, chunk):
            stop = min(start + chunk, module.in_features)
            eye = torch.zeros(stop - start, module.in_features, device=device, dtype=dtype)
            eye[:, start:stop] = torch.eye(stop - start, device=device, dtype=dtype)
            out = module(eye).float()
            if bias is not None:
                out = out - bias.float()
            columns.append(out)
    return torch.cat(columns).T.contiguous()


def _plain_linear(module: nn.Module) -> nn.Linear:
    weight = layer_weight(module)
    plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                      device=weight.device, dtype=compute_dtype(weight.device))  # the rest of the model's dtype
    with torch.no_grad():
        plain.weight.copy_(weight)
        if module.bias is not None:
            plain.bias.copy_(module.bias.float())
    return plain


def load_trainable(path: str, device: torch.device, targets: list[str]) -> tuple[nn.Module, dict[str, nn.Linear], Optional[dict]]:
    """(model, {name: plain Linear to patch}, llm_qat fake-quant spec or None)."""
    model = load_model(path, device, fake_quant=False)
    if hasattr(model, "peft_config"):
        raise ValueError(f"{path} is a base + LoRA adapter checkpoint (quant.merge=adapter); patch the merged "
                         f"form instead (quant.merge=requantize)")
    linears = {name: m for name, m in named_linears(model).items() if name.split(".")[-1] in targets}
    if not linears:
        raise ValueError(f"no Linear layer named {targets} in {path}: set patch.target_modules")
    if quant_method(path) == "bitsandbytes":
        for name, module in list(linears.items()):
            parent, _, child = name.rpartition(".")
            linears[name] = _plain_linear(module)
            setattr(model.get_submodule(parent), child, linears[name])
    sidecar = Path(path) / SIDECAR
    spec = json.loads(sidecar.read_text()) if sidecar.exists() else None
    return model, linears, spec

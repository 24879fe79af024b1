"""Fake quantization with a straight-through estimator, after LLM-QAT (Liu et al. 2023).

Weights: symmetric MinMax per output row (or per group of `group_size` inputs), applied through a
parametrization so training sees the quantized weight and updates the latent fp weight.
Activations: symmetric MinMax per token on the input of every quantized Linear (a pre-hook).
KV cache: symmetric MinMax per token on the outputs of the k and v projections (a hook), which is
what the cache stores. The forward pass uses the quantized values; the backward pass treats
quantization as the identity (STE).

After training the weights are written on their grid (so no weight quantizer is needed at load),
and `fake_quant.json` beside the checkpoint re-attaches the activation / KV quantizers at load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

SIDECAR = "fake_quant.json"
KV_PROJECTIONS = ("k_proj", "v_proj")


def fake_quantize(x: torch.Tensor, bits: int, group_size: Optional[int] = None) -> torch.Tensor:
    """Symmetric MinMax over the last dim (per row / per token, or per group); STE gradient."""
    shape = x.shape
    if group_size:
        x = x.reshape(*shape[:-1], shape[-1] // group_size, group_size)
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / qmax
    q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
    return (x + (q - x).detach()).reshape(shape)


class WeightFakeQuant(nn.Module):
    def __init__(self, bits: int, group_size: Optional[int]):
        super().__init__()
        self.bits, self.group_size = bits, group_size

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.bits, self.group_size)


def attach_activation_quant(model: nn.Module, names: list[str], act_bits: Optional[int],
                            kv_bits: Optional[int]) -> list:
    """Pre-hooks (inputs) and hooks (k/v outputs); returns the handles."""
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        module = modules[name]
        if act_bits:
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, b=act_bits: (fake_quantize(args[0], b), *args[1:])))
        if kv_bits and name.split(".")[-1] in KV_PROJECTIONS:
            handles.append(module.register_forward_hook(lambda _m, _a, out, b=kv_bits: fake_quantize(out, b)))
    return handles


def attach_weight_quant(linears: dict[str, nn.Linear], bits: int, group_size: Optional[int]) -> None:
    for module in linears.values():
        if group_size and module.in_features % group_size:
            raise ValueError(f"group_size={group_size} does not divide in_features={module.in_features}")
        parametrize.register_parametrization(module, "weight", WeightFakeQuant(bits, group_size))


def bake_weights(linears: dict[str, nn.Linear]) -> None:
    """Replace each latent weight by its quantized value and drop the parametrization."""
    for module in linears.values():
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def write_sidecar(out: Path, names: list[str], weight_bits: int, group_size: Optional[int],
                  act_bits: Optional[int], kv_bits: Optional[int]) -> None:
    (out / SIDECAR).write_text(json.dumps({"weight_bits": weight_bits, "group_size": group_size,
                                           "act_bits": act_bits, "kv_bits": kv_bits, "modules": names}, indent=1))


def attach_saved_fake_quant(model: nn.Module, path: str) -> Optional[dict]:
    """Re-attach a saved checkpoint's activation / KV quantizers (no-op for other checkpoints)."""
    sidecar = Path(path) / SIDECAR
    if not sidecar.exists():
        return None
    spec = json.loads(sidecar.read_text())
    attach_activation_quant(model, spec["modules"], spec["act_bits"], spec["kv_bits"])
    return spec

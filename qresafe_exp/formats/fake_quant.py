"""The fake-quant format (llm_qat): fp weights that lie on a symmetric MinMax grid, plus the sidecar
``fake_quant.json`` naming the activation / KV quantizers to re-attach at load.

The grid rule (``fake_quantize``, after LLM-QAT, Liu et al. 2023) and the activation / KV hooks live
here because the format is defined by them: the llm_qat quantizer trains through them
(quant/fake_quant.py), the load re-attaches them, and a patch is re-quantized with the same rule.
Activations: per token on the input of every quantized Linear (a pre-hook); KV cache: per token on
the outputs of the k and v projections (a hook), which is what the cache stores. The forward pass
uses the quantized values; the backward pass treats quantization as the identity (STE).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from qresafe_exp.formats.base import CheckpointFormat, Requantizer
from qresafe_exp.formats.plain import merge_fp_weights

SIDECAR = "fake_quant.json"
KV_PROJECTIONS = ("k_proj", "v_proj")


def fake_quantize(x: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Symmetric MinMax over the last dim (per row / per token, or per group); STE gradient."""
    shape = x.shape
    if group_size:
        x = x.reshape(*shape[:-1], shape[-1] // group_size, group_size)
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / qmax
    q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
    return (x + (q - x).detach()).reshape(shape)


def attach_activation_quant(model: nn.Module, names: list[str], act_bits: int | None, kv_bits: int | None) -> list:
    """Pre-hooks (inputs) and hooks (k/v outputs); returns the handles."""
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        module = modules[name]
        if act_bits:
            handles.append(
                module.register_forward_pre_hook(lambda _m, args, b=act_bits: (fake_quantize(args[0], b), *args[1:]))
            )
        if kv_bits and name.split(".")[-1] in KV_PROJECTIONS:
            handles.append(module.register_forward_hook(lambda _m, _a, out, b=kv_bits: fake_quantize(out, b)))
    return handles


def write_sidecar(
    out: Path,
    names: list[str],
    weight_bits: int,
    group_size: int | None,
    act_bits: int | None,
    kv_bits: int | None,
) -> None:
    (out / SIDECAR).write_text(
        json.dumps(
            {
                "weight_bits": weight_bits,
                "group_size": group_size,
                "act_bits": act_bits,
                "kv_bits": kv_bits,
                "modules": names,
            },
            indent=1,
        )
    )


class FakeQuant(CheckpointFormat):
    name = "fake-quant"
    sidecars = {SIDECAR: "fake-quantized activations / KV cache (llm_qat)"}

    @classmethod
    def detect(cls, path: Path, quant_method: str | None) -> bool:
        return quant_method is None and (path / SIDECAR).exists()

    def __init__(self, path: str, quantization_config: dict | None):
        super().__init__(path, quantization_config)
        self.spec = json.loads((Path(path) / SIDECAR).read_text())

    def apply_sidecars(self, model: nn.Module) -> dict:
        attach_activation_quant(model, self.spec["modules"], self.spec["act_bits"], self.spec["kv_bits"])
        return self.spec

    def trainable_view(self, model: nn.Module, linears: dict[str, nn.Module]) -> tuple[dict, dict]:
        return linears, self.spec  # grid weights train as they are; the trainer re-attaches the quantizers

    def requantizers(self, names: list[str]) -> dict[str, Requantizer | None]:
        bits, group = self.spec["weight_bits"], self.spec["group_size"]
        return {
            n: (lambda w, b=bits, g=group: fake_quantize(w, b, g)) if n in self.spec["modules"] else None for n in names
        }

    def write_merged(self, deltas: dict[str, torch.Tensor], out: Path, device: torch.device) -> dict:
        # the patched weights go back on the grid by the method's own rule; the sidecar is linked as it is
        stats = merge_fp_weights(Path(self.path), deltas, out, self.requantizers(list(deltas)))
        return {"format": f"fake-quant grid W{self.spec['weight_bits']} (LLM-QAT MinMax rule)", **stats}

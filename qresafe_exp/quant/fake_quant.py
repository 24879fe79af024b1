"""Fake quantization of weights for training, after LLM-QAT (Liu et al. 2023).

Weights: symmetric MinMax per output row (or per group of `group_size` inputs), applied through a
parametrization so training sees the quantized weight and updates the latent fp weight (STE). The
grid rule itself, the activation / KV quantizers and the ``fake_quant.json`` sidecar belong to the
checkpoint format llm_qat writes (qresafe_exp/formats/fake_quant.py).

After training the weights are written on their grid (so no weight quantizer is needed at load),
and the sidecar re-attaches the activation / KV quantizers at load.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from qresafe_exp.formats.fake_quant import fake_quantize


class WeightFakeQuant(nn.Module):
    def __init__(self, bits: int, group_size: int | None):
        super().__init__()
        self.bits, self.group_size = bits, group_size

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.bits, self.group_size)


def attach_weight_quant(linears: dict[str, nn.Linear], bits: int, group_size: int | None) -> None:
    for module in linears.values():
        if group_size and module.in_features % group_size:
            raise ValueError(f"group_size={group_size} does not divide in_features={module.in_features}")
        parametrize.register_parametrization(module, "weight", WeightFakeQuant(bits, group_size))


def bake_weights(linears: dict[str, nn.Linear]) -> None:
    """Replace each latent weight by its quantized value and drop the parametrization."""
    for module in linears.values():
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

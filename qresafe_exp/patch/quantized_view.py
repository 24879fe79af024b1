"""A quantized checkpoint as a trainable model: every targeted Linear becomes a plain Linear that
holds exactly the weight the quantized layer computes with (its dequantized grid values).

What that takes is the format's (qresafe_exp/formats/, ``trainable_view``): compressed-tensors
checkpoints already load dequantized; bitsandbytes layers are read through their own forward;
llm_qat checkpoints hold grid weights, and their activation / KV quantizers are returned for the
trainer to re-attach on the patched layers (the patch then sees the same activation quantization as
inference).
"""

from __future__ import annotations

import torch
from torch import nn

from qresafe_exp.formats import format_of
from qresafe_exp.lm import named_linears
from qresafe_exp.models import load_model


def load_trainable(
    path: str, device: torch.device, targets: list[str]
) -> tuple[nn.Module, dict[str, nn.Linear], dict | None]:
    """(model, {name: plain Linear to patch}, llm_qat fake-quant spec or None)."""
    model = load_model(path, device, fake_quant=False)
    if hasattr(model, "peft_config"):
        raise ValueError(
            f"{path} is a base + LoRA adapter checkpoint (quant.merge=adapter); patch the merged "
            f"form instead (quant.merge=requantize)"
        )
    linears = {name: m for name, m in named_linears(model).items() if name.split(".")[-1] in targets}
    if not linears:
        raise ValueError(f"no Linear layer named {targets} in {path}: set patch.target_modules")
    linears, fake_quant = format_of(path).trainable_view(model, linears)
    return model, linears, fake_quant

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
from qresafe_exp.formats.sidecars import adapter_deltas, add_output_delta
from qresafe_exp.lm import named_linears
from qresafe_exp.models import load_model


def load_trainable(
    path: str, device: torch.device, targets: list[str]
) -> tuple[nn.Module, dict[str, nn.Linear], dict | None]:
    """(model, {name: plain Linear to patch}, llm_qat fake-quant spec or None).

    A QLoRA merge=adapter cell is trained as what it serves, base + adapter: the adapter's update is
    added to the weights of the layers the patch trains and as a fixed output delta elsewhere."""
    model = load_model(path, device, fake_quant=False)
    if hasattr(model, "peft_config"):
        model = model.unload()  # the bnb base; the adapter's update comes back below from its files
    linears = {name: m for name, m in named_linears(model).items() if name.split(".")[-1] in targets}
    if not linears:
        raise ValueError(f"no Linear layer named {targets} in {path}: set patch.target_modules")
    linears, fake_quant = format_of(path).trainable_view(model, linears)
    modules = dict(model.named_modules())
    for name, delta in adapter_deltas(path).items():
        if name in linears:
            with torch.no_grad():
                linears[name].weight += delta.to(linears[name].weight.device, linears[name].weight.dtype)
        else:
            add_output_delta(modules[name], delta)
    return model, linears, fake_quant

"""Fold a patch (a dense delta per Linear) into a quantized checkpoint and write it back in the
checkpoint's own format, so the merged model is as small, and loads the same way, as the unpatched
one; and the same re-quantization as a function W -> Q(W) for training a patch that survives the
merge (``patch.quant_aware``: the forward pass uses the weight the merged checkpoint will hold, the
backward pass treats rounding as the identity).

How each format rounds is the format's own (qresafe_exp/formats/): compressed-tensors onto its
original grid, bitsandbytes with bnb's own quantizer, llm_qat with its MinMax rule, a plain
checkpoint not at all. This module is the patches' side: what cannot be merged, and the version of
the merge that enters the ``patch`` cache key.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qresafe_exp.formats import format_of
from qresafe_exp.formats.base import Requantizer
from qresafe_exp.formats.sidecars import adapter_deltas

REQUANTIZE_VERSION = 2  # 2: bnb tensors from the functional quantizers


def check_mergeable(patch_name: str, quant_cfg) -> None:
    """Refuse, before any work, cells whose format a patch delta cannot be merged back into (the
    quantizer says which: Quantizer.merge_refusal)."""
    from qresafe_exp.quant import QUANTIZERS
    from qresafe_exp.quant.base import UnsupportedCombinationError

    reason = QUANTIZERS.get(quant_cfg.name).merge_refusal(quant_cfg)
    if reason:
        raise UnsupportedCombinationError(f"patch={patch_name} on quant={quant_cfg.name}{reason}")


def write_merged(src: str, deltas: dict[str, torch.Tensor], out: Path, device: torch.device) -> dict:
    """Write ``src`` + deltas, re-quantized into src's format, to ``out``; returns what changed.

    A QLoRA merge=adapter cell serves base + adapter, and every patch trains on that (quantized_view):
    its merged form is Q(base + adapter + delta), so the fine-tune is folded in, never dropped."""
    folded = adapter_deltas(src)
    if folded:
        deltas = dict(deltas)
        for name, update in folded.items():
            deltas[name] = deltas[name].float() + update if name in deltas else update
    return format_of(src).write_merged(deltas, out, device)


def requantizers(path: str, names: list[str]) -> dict[str, Requantizer | None]:
    """{layer name: W -> Q(W)} for the checkpoint at ``path`` (None = the format keeps fp weights)."""
    return format_of(path).requantizers(names)

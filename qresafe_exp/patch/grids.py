"""Each patched layer's re-quantizer as a differentiable-by-STE function W -> Q(W), for training a
patch that survives the merge (``patch.quant_aware``): the forward pass uses the weight the merged
checkpoint will hold, the backward pass treats rounding as the identity.

The functions follow write_merged (patch/requantize.py) format by format: compressed-tensors rounds
onto the saved grid (scales, zero points, group map); bitsandbytes re-quantizes blockwise with bnb's
own routines; llm_qat uses its MinMax rule; a plain checkpoint is the identity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch

from qresafe_exp.models import quant_method
from qresafe_exp.quant.fake_quant import SIDECAR, fake_quantize

Requantizer = Callable[[torch.Tensor], torch.Tensor]


def requantizers(path: str, names: list[str]) -> dict[str, Optional[Requantizer]]:
    """{layer name: W -> Q(W)} for the checkpoint at ``path`` (None = the format keeps fp weights)."""
    method = quant_method(path)
    if method == "compressed-tensors":
        return _compressed_tensors(Path(path), names)
    if method == "bitsandbytes":
        return _bitsandbytes(Path(path), names)
    sidecar = Path(path) / SIDECAR
    if method is None and sidecar.exists():
        spec = json.loads(sidecar.read_text())
        bits, group = spec["weight_bits"], spec["group_size"]
        return {n: (lambda w, b=bits, g=group: fake_quantize(w, b, g)) if n in spec["modules"] else None for n in names}
    if method is None:
        return {n: None for n in names}
    raise ValueError(f"no re-quantizer for a '{method}' checkpoint ({path})")


def _compressed_tensors(path: Path, names: list[str]) -> dict:
    from safetensors.torch import load_file

    from qresafe_exp.patch.requantize import _grid, _weight_args, grid_codes

    args = _weight_args(path)
    bits = int(args["num_bits"])
    out = {}
    for shard in sorted(path.glob("model*.safetensors")):
        tensors = load_file(str(shard))
        for name in names:
            if f"{name}.weight_packed" in tensors:
                _, scale, zero = _grid(tensors, name, args)

                def fn(w, s=scale, z=zero):
                    s, z = s.to(w.device), z.to(w.device)
                    return (grid_codes(w, s, z, bits) - z) * s
                out[name] = fn
    return {n: out.get(n) for n in names}


def _bitsandbytes(path: Path, names: list[str]) -> dict:
    import bitsandbytes.functional as bnbf

    from qresafe_exp.patch.requantize import bnb_4bit, bnb_int8, bnb_weight_dtypes

    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    if qc.get("load_in_8bit"):
        def int8(w):
            codes, row_scale = bnb_int8(w)
            return (codes.float() * row_scale.unsqueeze(1) / 127).to(w.dtype)
        return {n: int8 for n in names}
    dtypes = bnb_weight_dtypes(path)

    def four_bit(w, dtype):
        return bnbf.dequantize_4bit(*bnb_4bit(w, qc, dtype)).to(w.dtype)
    return {n: (lambda w, d=dtypes.get(n, torch.float32): four_bit(w, d)) for n in names}

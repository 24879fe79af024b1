"""A plain full-precision checkpoint (the FP model, ``quant=none``): loaded as it is, trained as it is,
merged as W + delta. Its weight-rewrite is shared with the fake-quant format (grid weights are fp)."""

from __future__ import annotations

from pathlib import Path

import torch

from qresafe_exp.formats.base import CheckpointFormat, Requantizer
from qresafe_exp.formats.rewrite import layer_stats, realized, rewrite_shards


def merge_fp_weights(
    src: Path, deltas: dict, out: Path, requantizers: dict[str, Requantizer | None] | None = None
) -> dict:
    """Write ``src`` with W + delta per patched layer, put back on its grid where ``requantizers`` has one."""
    remaining, stats = set(deltas), []

    def edit(tensors: dict) -> None:
        for name in [n for n in remaining if f"{n}.weight" in tensors]:
            before = tensors[f"{name}.weight"]
            merged = before.float() + deltas[name].float().cpu()
            if requantizers and requantizers.get(name) is not None:
                merged = requantizers[name](merged)
            tensors[f"{name}.weight"] = merged.to(before.dtype).contiguous()
            stats.append(layer_stats(deltas[name], before, tensors[f"{name}.weight"]))
            remaining.discard(name)

    rewrite_shards(src, out, edit)
    if remaining:
        raise ValueError(f"{src}: no weight for patched layers {sorted(remaining)[:3]}")
    return realized(stats)


class Plain(CheckpointFormat):
    name = "plain"
    fallback = True

    @classmethod
    def detect(cls, path: Path, quant_method: str | None) -> bool:
        return quant_method is None

    def requantizers(self, names: list[str]) -> dict[str, Requantizer | None]:
        return {n: None for n in names}

    def write_merged(self, deltas: dict[str, torch.Tensor], out: Path, device: torch.device) -> dict:
        return {"format": "fp (no quantization)", **merge_fp_weights(Path(self.path), deltas, out)}

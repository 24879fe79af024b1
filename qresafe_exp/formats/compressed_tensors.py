"""compressed-tensors ``pack-quantized`` (what rtn / gptq / awq write through llm-compressor).

Loaded dequantized by default: the weights are exactly the grid values, held in the compute dtype,
which is what a CPU runs fast and what a patch trains on directly. A patch is merged by rounding each
patched weight onto its ORIGINAL grid (the saved scales, zero points and group map are kept) and
re-packing it; the other tensors are untouched. A delta smaller than half a grid step therefore
vanishes: ``realized_fraction`` says how much of it survived. The quantization-aware re-quantizer is
that same rounding.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qresafe_exp.formats.base import CheckpointFormat, Requantizer
from qresafe_exp.formats.rewrite import layer_stats, realized, rewrite_shards


def grid_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes of ``w`` on a compressed-tensors grid (per-entry scale and zero point)."""
    return torch.clamp(torch.round(w / scale) + zero, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _grid(tensors: dict, prefix: str, args: dict):
    """(integer codes, per-entry scale, per-entry zero point) of one layer."""
    from compressed_tensors.compressors import unpack_from_int32

    bits = int(args["num_bits"])
    shape = torch.Size(tensors[f"{prefix}.weight_shape"].tolist())
    codes = unpack_from_int32(tensors[f"{prefix}.weight_packed"], bits, shape).to(torch.int32)
    scale = tensors[f"{prefix}.weight_scale"].float()
    if f"{prefix}.weight_g_idx" in tensors:  # activation ordering: an explicit column -> group map
        columns = tensors[f"{prefix}.weight_g_idx"].long()
    else:
        columns = torch.arange(shape[1]) // (int(args["group_size"]) if args.get("group_size") else shape[1])
    zp = tensors.get(f"{prefix}.weight_zero_point")
    if zp is not None and zp.dtype == torch.int32 and zp.shape != scale.shape:  # packed along rows
        zp = unpack_from_int32(zp, bits, scale.shape, packed_dim=0)
    zero = torch.zeros_like(scale) if zp is None else zp.float()
    return codes, scale[:, columns], zero[:, columns]


class CompressedTensors(CheckpointFormat):
    name = "compressed-tensors"

    @classmethod
    def detect(cls, path: Path, quant_method: str | None) -> bool:
        return quant_method == "compressed-tensors"

    def from_pretrained_kwargs(self, dequantize: bool) -> dict:
        # dequantize=False keeps the packed int weights (transformers' compressed path): used to check
        # that the saved checkpoint itself loads and generates
        from transformers import CompressedTensorsConfig

        return {"quantization_config": CompressedTensorsConfig(dequantize=dequantize)}

    def weight_args(self) -> dict:
        groups = list(self.qc["config_groups"].values())
        if len(groups) != 1 or self.qc.get("format") != "pack-quantized":
            raise ValueError(
                f"{self.path}: only single-scheme pack-quantized compressed-tensors checkpoints can "
                f"be re-quantized (found format={self.qc.get('format')}, {len(groups)} schemes)"
            )
        return groups[0]["weights"]

    def requantizers(self, names: list[str]) -> dict[str, Requantizer | None]:
        from safetensors.torch import load_file

        args = self.weight_args()
        bits = int(args["num_bits"])
        out = {}
        for shard in sorted(Path(self.path).glob("model*.safetensors")):
            tensors = load_file(str(shard))
            for name in names:
                if f"{name}.weight_packed" in tensors:
                    _, scale, zero = _grid(tensors, name, args)

                    def fn(w, s=scale, z=zero):
                        s, z = s.to(w.device), z.to(w.device)
                        return (grid_codes(w, s, z, bits) - z) * s

                    out[name] = fn
        return {n: out.get(n) for n in names}

    def write_merged(self, deltas: dict[str, torch.Tensor], out: Path, device: torch.device) -> dict:
        from compressed_tensors.compressors import pack_to_int32

        args = self.weight_args()
        bits = int(args["num_bits"])
        remaining, stats = set(deltas), []

        def edit(tensors: dict) -> None:
            for name in [n for n in remaining if f"{n}.weight_packed" in tensors]:
                codes, scale, zero = _grid(tensors, name, args)
                before = (codes.float() - zero) * scale
                merged = before + deltas[name].float().cpu()
                new_codes = grid_codes(merged, scale, zero, bits)
                after = (new_codes - zero) * scale
                tensors[f"{name}.weight_packed"] = pack_to_int32(new_codes.to(torch.int8), bits)
                stats.append(layer_stats(deltas[name], before, after))
                remaining.discard(name)

        rewrite_shards(Path(self.path), out, edit)
        if remaining:
            raise ValueError(f"{self.path}: no packed weight for patched layers {sorted(remaining)[:3]}")
        return {"format": "compressed-tensors (original scales)", **realized(stats)}

"""Fold a patch (a dense delta per Linear) into a quantized checkpoint and write it back in the
checkpoint's own format: the merged model is as small, and loads the same way, as the unpatched one.

- compressed-tensors (rtn / gptq / awq): each patched weight is rounded onto its ORIGINAL grid (the
  saved scales, zero points and group map are kept) and re-packed; the other tensors are untouched.
  A delta smaller than half a grid step therefore vanishes: ``realized_fraction`` says how much of it
  survived.
- bitsandbytes (bnb, qlora): patched layers get new packed parameters from bnb's own quantizer
  (blockwise absmax, same quant type and block size); unpatched layers keep their packed bytes.
- llm_qat (grid weights + fake_quant.json): re-quantized with the method's own rule (symmetric MinMax
  per row / group at the saved weight bits), the activation / KV sidecar copied.
- a plain fp checkpoint: W + delta.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from qresafe_exp.models import load_model, quant_method
from qresafe_exp.patch.quantized_view import layer_weight
from qresafe_exp.quant.fake_quant import SIDECAR, fake_quantize

REQUANTIZE_VERSION = 2  # 2: bnb tensors from the functional quantizers


def check_mergeable(patch_name: str, quant_cfg) -> None:
    """Refuse, before any work, cells whose format a patch delta cannot be merged back into."""
    from qresafe_exp.quant.base import UnsupportedCombinationError

    if quant_cfg.name == "aqlm":
        raise UnsupportedCombinationError(
            f"patch={patch_name} on quant=aqlm: re-quantizing a patch into AQLM codebooks is not implemented; "
            f"patch a bnb / qlora / llm_qat / rtn / gptq / awq cell")
    if quant_cfg.name == "qlora" and quant_cfg.get("merge") == "adapter":
        raise UnsupportedCombinationError(
            f"patch={patch_name} on quant=qlora quant.merge=adapter: the cell is a bnb base plus a 16-bit "
            f"adapter, which has no single quantized format to merge into; use quant.merge=requantize")


def link_checkpoint(src: Path, out: Path, skip=lambda name: False) -> None:
    """Hard-link (copy where links fail) every file of ``src`` into ``out``: a read-only view, no space."""
    out.mkdir(parents=True, exist_ok=True)
    for item in Path(src).iterdir():
        if item.is_file() and not skip(item.name):
            try:
                os.link(item, out / item.name)
            except OSError:
                shutil.copy2(item, out / item.name)


# ---------------------------------------------------------------- the re-quantizers (grids.py trains through them)
def grid_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes of ``w`` on a compressed-tensors grid (per-entry scale and zero point)."""
    return torch.clamp(torch.round(w / scale) + zero, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def bnb_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM.int8() weight codes and per-row scales (dequantized: codes * scale / 127)."""
    import bitsandbytes.functional as bnbf

    codes, row_scale, _ = bnbf.int8_vectorwise_quant(w.to(torch.float16))
    return codes, row_scale.float()


def bnb_4bit(w: torch.Tensor, qc: dict, dtype: torch.dtype):
    """(packed weight, quant state) of bnb's 4-bit quantizer with the checkpoint's settings and dtype."""
    import bitsandbytes.functional as bnbf

    return bnbf.quantize_4bit(w.to(dtype).contiguous(), blocksize=64, quant_type=qc.get("bnb_4bit_quant_type", "nf4"),
                              compress_statistics=bool(qc.get("bnb_4bit_use_double_quant")), quant_storage=torch.uint8)


def _is_shard(name: str) -> bool:
    return name.startswith("model") and name.endswith(".safetensors")


def _rewrite_shards(src: Path, out: Path, edit) -> None:
    """Link every non-weight file of ``src`` into ``out`` and write each weight shard after ``edit(tensors)``
    changed it in place: the one copy path of every format below."""
    from safetensors.torch import load_file, save_file

    link_checkpoint(src, out, skip=_is_shard)
    for shard in sorted(src.glob("model*.safetensors")):
        tensors = load_file(str(shard))
        edit(tensors)
        save_file(tensors, str(out / shard.name), metadata={"format": "pt"})


def write_merged(src: str, deltas: dict[str, torch.Tensor], out: Path, device: torch.device) -> dict:
    """Write ``src`` + deltas, re-quantized into src's format, to ``out``; returns what changed."""
    method = quant_method(src)
    if method == "compressed-tensors":
        stats = _merge_compressed_tensors(Path(src), deltas, out)
        fmt = "compressed-tensors (original scales)"
    elif method == "bitsandbytes":
        stats = _merge_bnb(src, deltas, out, device)
        fmt = "bitsandbytes (bnb requantization of patched layers)"
    elif method is None:
        sidecar = Path(src) / SIDECAR
        spec = json.loads(sidecar.read_text()) if sidecar.exists() else None
        stats = _merge_plain(Path(src), deltas, out, spec)
        fmt = f"fake-quant grid W{spec['weight_bits']} (LLM-QAT MinMax rule)" if spec else "fp (no quantization)"
    else:
        raise ValueError(f"cannot re-quantize a '{method}' checkpoint ({src}); supported: compressed-tensors, "
                         f"bitsandbytes, llm_qat fake-quant and plain checkpoints")
    return {"format": fmt, **stats}


def _realized(stats: list[tuple[float, float, float, int, int]]) -> dict:
    """Sum per-layer (|delta|^2, |realized|^2, <delta, realized>, changed entries, entries)."""
    d2 = sum(s[0] for s in stats)
    r2 = sum(s[1] for s in stats)
    dot = sum(s[2] for s in stats)
    changed, total = sum(s[3] for s in stats), sum(s[4] for s in stats)
    return {"delta_norm": round(d2 ** 0.5, 6), "realized_norm": round(r2 ** 0.5, 6),
            # the share of the patch that survived re-quantization (projection of realized on delta)
            "realized_fraction": round(dot / d2, 4) if d2 else None,
            "changed_entries": changed, "patched_entries": total,
            "changed_fraction": round(changed / total, 6) if total else 0.0}


def _layer_stats(delta: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> tuple:
    realized = after.float().cpu() - before.float().cpu()
    delta = delta.float().cpu()
    return (delta.pow(2).sum().item(), realized.pow(2).sum().item(), (delta * realized).sum().item(),
            int((realized != 0).sum().item()), realized.numel())


# ---------------------------------------------------------------- compressed-tensors
def _weight_args(src: Path) -> dict:
    qc = json.loads((src / "config.json").read_text())["quantization_config"]
    groups = list(qc["config_groups"].values())
    if len(groups) != 1 or qc.get("format") != "pack-quantized":
        raise ValueError(f"{src}: only single-scheme pack-quantized compressed-tensors checkpoints can be "
                         f"re-quantized (found format={qc.get('format')}, {len(groups)} schemes)")
    return groups[0]["weights"]


def _grid(tensors: dict, prefix: str, args: dict):
    """(integer codes, per-entry scale, per-entry zero point, packed-zp flag) of one layer."""
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


def _merge_compressed_tensors(src: Path, deltas: dict, out: Path) -> dict:
    from compressed_tensors.compressors import pack_to_int32

    args = _weight_args(src)
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
            stats.append(_layer_stats(deltas[name], before, after))
            remaining.discard(name)

    _rewrite_shards(src, out, edit)
    if remaining:
        raise ValueError(f"{src}: no packed weight for patched layers {sorted(remaining)[:3]}")
    return _realized(stats)


# ---------------------------------------------------------------- bitsandbytes
def _merge_bnb(src: str, deltas: dict, out: Path, device: torch.device) -> dict:
    # The weights before the patch are read through the loaded layers (what inference computes). The
    # new packed tensors come from bnb's functional quantizers, in the checkpoint's canonical layout:
    # a loaded CPU layer holds a repacked state, and transformers 5 cannot save a model it loaded
    # from a bnb checkpoint at all.
    qc = json.loads((Path(src) / "config.json").read_text())["quantization_config"]
    dtypes = bnb_weight_dtypes(Path(src))
    model = load_model(src, device)
    modules = dict(model.named_modules())
    replaced, befores = {}, {}
    for name, delta in deltas.items():
        befores[name] = before = layer_weight(modules[name]).cpu()
        merged = before + delta.float().cpu()
        if qc.get("load_in_8bit"):
            replaced[f"{name}.weight"], replaced[f"{name}.SCB"] = bnb_int8(merged)
        else:  # in the dtype the checkpoint recorded (its quant state stores it)
            packed, state = bnb_4bit(merged, qc, dtypes.get(name, torch.float32))
            replaced[f"{name}.weight"] = packed
            replaced.update({f"{name}.weight.{k}": v for k, v in state.as_dict(packed=True).items()})
    del model

    def edit(tensors: dict) -> None:
        for key in [k for k in replaced if k in tensors]:
            value = replaced.pop(key).contiguous()
            if (value.shape != tensors[key].shape or value.dtype != tensors[key].dtype) and ".quant_state." not in key:
                raise ValueError(f"{src}: re-quantized {key} is {tuple(value.shape)} {value.dtype}, the checkpoint "
                                 f"holds {tuple(tensors[key].shape)} {tensors[key].dtype}")
            tensors[key] = value

    _rewrite_shards(Path(src), out, edit)
    if replaced:
        raise ValueError(f"{src}: the checkpoint has no tensors {sorted(replaced)[:3]} for the re-quantized layers")
    # what changed is measured on what inference computes: the merged checkpoint, loaded
    merged_modules = dict(load_model(str(out), device).named_modules())
    return _realized([_layer_stats(delta, befores[name], layer_weight(merged_modules[name]))
                      for name, delta in deltas.items()])


def bnb_weight_dtypes(src: Path) -> dict[str, torch.dtype]:
    """{layer: dtype} from each 4-bit layer's serialized quant state (a JSON blob in the checkpoint)."""
    from safetensors import safe_open

    out = {}
    for shard in sorted(src.glob("model*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                if ".weight.quant_state.bitsandbytes__" in key:
                    blob = json.loads(bytes(f.get_tensor(key).tolist()).decode())
                    out[key.split(".weight.quant_state.")[0]] = getattr(torch, blob.get("dtype", "float32"))
    return out


# ---------------------------------------------------------------- fake-quant grid / plain fp
def _merge_plain(src: Path, deltas: dict, out: Path, fake_quant: dict | None) -> dict:
    remaining, stats = set(deltas), []

    def edit(tensors: dict) -> None:
        for name in [n for n in remaining if f"{n}.weight" in tensors]:
            before = tensors[f"{name}.weight"]
            merged = before.float() + deltas[name].float().cpu()
            if fake_quant and name in fake_quant["modules"]:
                merged = fake_quantize(merged, fake_quant["weight_bits"], fake_quant["group_size"])
            tensors[f"{name}.weight"] = merged.to(before.dtype).contiguous()
            stats.append(_layer_stats(deltas[name], before, tensors[f"{name}.weight"]))
            remaining.discard(name)

    _rewrite_shards(src, out, edit)
    if remaining:
        raise ValueError(f"{src}: no weight for patched layers {sorted(remaining)[:3]}")
    return _realized(stats)

"""The generic sidecars: files that ride beside a checkpoint of any format and change what it computes,
applied by ``models.load_model`` after the format's own load (a format's own sidecars live in its module).

- ``patch_delta.safetensors``: an unmerged safety patch, one 16-bit dense delta per Linear, added to
  the layer's output (y += x @ delta^T) on top of whatever the quantized layer computes: the
  "adapter on a quantized base" form whose ASR the merged, re-quantized model is compared with.
- ``kept_weights.safetensors``: Q-resafe's AWQ variant. For each Linear, the flat indices and 16-bit
  values of the safety-critical entries, written over the dequantized weight.
- ``qlora_adapter/``: qlora's quant.merge=adapter, a PEFT LoRA adapter that rides on the bnb base.
  A patch trained on such a cell sees base + adapter (``adapter_deltas``) and merges both.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PATCH_DELTA = "patch_delta.safetensors"
KEPT_WEIGHTS = "kept_weights.safetensors"
ADAPTER_DIR = "qlora_adapter"
# what each one is, for an engine that cannot apply them to name when it refuses a checkpoint
SIDECARS = {
    PATCH_DELTA: "a 16-bit safety-patch delta",
    KEPT_WEIGHTS: "16-bit kept safety weights",
    ADAPTER_DIR: "an unmerged QLoRA adapter",
}


def save_patch_delta(deltas: dict[str, torch.Tensor], out: Path) -> int:
    """Write the deltas (fp16); returns the bytes written."""
    from safetensors.torch import save_file

    path = Path(out) / PATCH_DELTA
    save_file({name: d.detach().to("cpu", torch.float16).contiguous() for name, d in deltas.items()}, str(path))
    return path.stat().st_size


def attach_patch_delta(model: nn.Module, path: str) -> int:
    """Add the saved deltas to their layers' outputs; returns how many layers (0 without the file)."""
    file = Path(path) / PATCH_DELTA
    if not file.exists():
        return 0
    from safetensors.torch import load_file

    modules = dict(model.named_modules())
    deltas = load_file(str(file))
    missing = sorted(set(deltas) - set(modules))
    if missing:
        raise ValueError(f"{file} patches layers the model does not have: {missing[:3]}")
    for name, delta in deltas.items():
        add_output_delta(modules[name], delta)
    return len(deltas)


def _add_delta(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    return output + F.linear(x, module.patch_delta.to(x.dtype))


def save_kept_weights(kept: dict[str, tuple[torch.Tensor, torch.Tensor]], out: Path) -> int:
    """kept = {linear name: (flat int64 indices, values)}; values stored fp16. Returns bytes written."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (index, values) in kept.items():
        tensors[f"{name}.index"] = index.to(torch.int32).contiguous()
        tensors[f"{name}.values"] = values.to(torch.float16).contiguous()
    path = Path(out) / KEPT_WEIGHTS
    save_file(tensors, str(path))
    return path.stat().st_size


def apply_kept_weights(model: nn.Module, path: str) -> int:
    """Write the kept 16-bit entries over the dequantized weights; returns how many entries."""
    file = Path(path) / KEPT_WEIGHTS
    if not file.exists():
        return 0
    from safetensors.torch import load_file

    tensors = load_file(str(file))
    modules = dict(model.named_modules())
    written = 0
    for key in tensors:
        if not key.endswith(".index"):
            continue
        name = key[: -len(".index")]
        weight = getattr(modules.get(name), "weight", None)
        if weight is None or not weight.is_floating_point():
            raise ValueError(
                f"{file}: layer {name} has no dequantized weight to write into (load the "
                f"checkpoint with dequantize=True)"
            )
        with torch.no_grad():
            flat = weight.view(-1)
            flat[tensors[key].long().to(flat.device)] = tensors[f"{name}.values"].to(flat.device, flat.dtype)
        written += tensors[key].numel()
    return written


def attach_adapter(model: nn.Module, path: str) -> nn.Module:
    """The model wrapped with the checkpoint's LoRA adapter (the model itself without the directory)."""
    adapter = Path(path) / ADAPTER_DIR
    if not adapter.is_dir():
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter))


def adapter_deltas(path: str) -> dict[str, torch.Tensor]:
    """The weight update the checkpoint's QLoRA adapter stands for, per base Linear name: (alpha / r) B A
    in fp32, read from the adapter's own files ({} without an adapter). A patch on a merge=adapter cell
    trains on base + these and folds them into its merged form, so neither form drops the fine-tune."""
    import json

    from safetensors.torch import load_file

    adapter = Path(path) / ADAPTER_DIR
    if not adapter.is_dir():
        return {}
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{adapter}: only a plain LoRA adapter (no rsLoRA, DoRA or per-layer ranks) can be folded")
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    deltas = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removesuffix(".lora_A.weight").removeprefix("base_model.model.")
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        deltas[name] = scale * (b.float() @ a.float())
    return deltas


def add_output_delta(module: nn.Module, delta: torch.Tensor) -> None:
    """y += x @ delta^T on ``module`` (a hook: the module's own weights stay as they are)."""
    device = next(module.parameters()).device
    module.register_buffer("patch_delta", delta.to(device), persistent=False)
    module.register_forward_hook(_add_delta)

"""bitsandbytes checkpoints (bnb, qlora): LLM.int8() and 4-bit NF4 / FP4, packed weights plus their
quantization state.

bnb layers are placed at load time and keep packed weights whose dequantization depends on the
backend, so the trainable view reads each weight through the layer itself, W = layer(I)^T, which is
by construction what inference uses. A patch is merged by giving the patched layers new packed
parameters from bnb's own functional quantizers (blockwise absmax, same quant type and block size, in
the dtype the checkpoint recorded); unpatched layers keep their packed bytes. The quantization-aware
re-quantizer is that same routine followed by bnb's dequantization.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from qresafe_exp.devices import compute_dtype
from qresafe_exp.formats.base import CheckpointFormat, Requantizer, trusts_remote_code
from qresafe_exp.formats.rewrite import layer_stats, realized, rewrite_shards


def silence_bnb_warnings() -> None:
    # LLM.int8() on CPU warns once per matmul that it casts inputs to fp16: thousands of lines.
    warnings.filterwarnings("ignore", message=".*inputs will be cast from.*")
    # without the optional `kernels` package (fetched from the hub) bnb falls back to its own CPU op
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def layer_weight(module: nn.Module, chunk: int = 1024) -> torch.Tensor:
    """The (out, in) weight a Linear-like layer multiplies by, read through its own forward."""
    device = next(module.parameters()).device
    dtype = compute_dtype(device)
    bias = getattr(module, "bias", None)
    columns = []
    with torch.no_grad():
        for start in range(0, module.in_features, chunk):
            stop = min(start + chunk, module.in_features)
            eye = torch.zeros(stop - start, module.in_features, device=device, dtype=dtype)
            eye[:, start:stop] = torch.eye(stop - start, device=device, dtype=dtype)
            out = module(eye).float()
            if bias is not None:
                out = out - bias.float()
            columns.append(out)
    return torch.cat(columns).T.contiguous()


def _plain_linear(module: nn.Module) -> nn.Linear:
    weight = layer_weight(module)
    plain = nn.Linear(
        module.in_features,
        module.out_features,
        bias=module.bias is not None,
        device=weight.device,
        dtype=compute_dtype(weight.device),
    )  # the rest of the model's dtype
    with torch.no_grad():
        plain.weight.copy_(weight)
        if module.bias is not None:
            plain.bias.copy_(module.bias.float())
    return plain


def bnb_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM.int8() weight codes and per-row scales (dequantized: codes * scale / 127)."""
    import bitsandbytes.functional as bnbf

    codes, row_scale, _ = bnbf.int8_vectorwise_quant(w.to(torch.float16))
    return codes, row_scale.float()


def bnb_4bit(w: torch.Tensor, qc: dict, dtype: torch.dtype):
    """(packed weight, quant state) of bnb's 4-bit quantizer with the checkpoint's settings and dtype."""
    import bitsandbytes.functional as bnbf

    return bnbf.quantize_4bit(
        w.to(dtype).contiguous(),
        blocksize=64,
        quant_type=qc.get("bnb_4bit_quant_type", "nf4"),
        compress_statistics=bool(qc.get("bnb_4bit_use_double_quant")),
        quant_storage=torch.uint8,
    )


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


class Bitsandbytes(CheckpointFormat):
    name = "bitsandbytes"

    @classmethod
    def detect(cls, path: Path, quant_method: str | None) -> bool:
        return quant_method == "bitsandbytes"

    def load(
        self,
        device: torch.device,
        *,
        dequantize: bool = True,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
    ) -> nn.Module:
        from transformers import AutoModelForCausalLM

        silence_bnb_warnings()  # bnb modules are placed at load time and cannot be moved after
        return AutoModelForCausalLM.from_pretrained(
            self.path,
            device_map=str(device),
            dtype=dtype or compute_dtype(device),
            revision=revision,
            trust_remote_code=trusts_remote_code(self.path),
        ).eval()

    def trainable_view(self, model: nn.Module, linears: dict[str, nn.Module]) -> tuple[dict, None]:
        plain = {}
        for name, module in linears.items():
            parent, _, child = name.rpartition(".")
            plain[name] = _plain_linear(module)
            setattr(model.get_submodule(parent), child, plain[name])
        return plain, None

    def requantizers(self, names: list[str]) -> dict[str, Requantizer | None]:
        import bitsandbytes.functional as bnbf

        qc = self.qc
        if qc.get("load_in_8bit"):

            def int8(w):
                codes, row_scale = bnb_int8(w)
                return (codes.float() * row_scale.unsqueeze(1) / 127).to(w.dtype)

            return {n: int8 for n in names}
        dtypes = bnb_weight_dtypes(Path(self.path))

        def four_bit(w, dtype):
            return bnbf.dequantize_4bit(*bnb_4bit(w, qc, dtype)).to(w.dtype)

        return {n: (lambda w, d=dtypes.get(n, torch.float32): four_bit(w, d)) for n in names}  # noqa: B008 (binds n)

    def write_merged(self, deltas: dict[str, torch.Tensor], out: Path, device: torch.device) -> dict:
        # The weights before the patch are read through the loaded layers (what inference computes). The
        # new packed tensors come from bnb's functional quantizers, in the checkpoint's canonical layout:
        # a loaded CPU layer holds a repacked state, and transformers 5 cannot save a model it loaded
        # from a bnb checkpoint at all.
        src, qc = self.path, self.qc
        dtypes = bnb_weight_dtypes(Path(src))
        model = self.load(device)
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
                if (
                    value.shape != tensors[key].shape or value.dtype != tensors[key].dtype
                ) and ".quant_state." not in key:
                    raise ValueError(
                        f"{src}: re-quantized {key} is {tuple(value.shape)} {value.dtype}, the checkpoint "
                        f"holds {tuple(tensors[key].shape)} {tensors[key].dtype}"
                    )
                tensors[key] = value

        rewrite_shards(Path(src), out, edit)
        if replaced:
            raise ValueError(f"{src}: the checkpoint has no tensors {sorted(replaced)[:3]} for the re-quantized layers")
        # what changed is measured on what inference computes: the merged checkpoint, loaded
        merged_modules = dict(Bitsandbytes(str(out), self.qc).load(device).named_modules())
        stats = realized(
            [layer_stats(delta, befores[name], layer_weight(merged_modules[name])) for name, delta in deltas.items()]
        )
        return {"format": "bitsandbytes (bnb requantization of patched layers)", **stats}

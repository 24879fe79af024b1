"""bitsandbytes: LLM.int8() (8 bits), NF4 and FP4 (4 bits), data-free, saved as a bnb checkpoint.

bnb quantizes while transformers loads the fp checkpoint; save_pretrained then writes the packed
weights and their quantization state, which transformers reloads on CPU or GPU.
"""

from __future__ import annotations

import torch

from qresafe_exp.formats.bitsandbytes import silence_bnb_warnings
from qresafe_exp.quant.base import Quantizer, UnsupportedCombinationError, checkpoint_bytes
from qresafe_exp.schema import bnb_format

FORMAT_BITS = {"int8": 8, "nf4": 4, "fp4": 4}


def resolved_format(cfg) -> str:
    return bnb_format(cfg.format, cfg.bits)


def check_format(name: str, cfg) -> None:
    fmt = resolved_format(cfg)
    if fmt not in FORMAT_BITS:
        raise UnsupportedCombinationError(
            f"quant={name} bits={cfg.bits}: bitsandbytes has no {cfg.bits}-bit format. It has int8 (bits=8), "
            f"nf4 and fp4 (bits=4); set bits=8 or bits=4 (quant.format=nf4|fp4)"
        )
    if FORMAT_BITS[fmt] != cfg.bits:
        raise UnsupportedCombinationError(
            f"quant={name} quant.format={fmt} is a {FORMAT_BITS[fmt]}-bit format, not bits={cfg.bits}. Use "
            f"bits={FORMAT_BITS[fmt]}, or quant.format=auto"
        )


def bnb_config(cfg):
    from transformers import BitsAndBytesConfig

    fmt = resolved_format(cfg)
    if fmt == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    # fp32 compute on CPU (no bf16 units); the GPU path is chosen by the loader's dtype
    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=fmt,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=bool(cfg.double_quant),
    )


def load_quantized(model_path: str, cfg):
    from transformers import AutoModelForCausalLM

    silence_bnb_warnings()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(
        model_path,
        quantization_config=bnb_config(cfg),
        dtype=torch.float32 if device == "cpu" else torch.bfloat16,
        device_map=device,
    )


class BnbQuantizer(Quantizer):
    name = "bnb"
    supported_bits = (4, 8)
    backends = ("bitsandbytes",)

    @classmethod
    def validate(cls, cfg):
        super().validate(cfg)
        check_format(cls.name, cfg)

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        from transformers import AutoTokenizer

        model = load_quantized(model_path, cfg)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
        return {"checkpoint_bytes": checkpoint_bytes(out), "format": f"bitsandbytes/{resolved_format(cfg)}"}

"""llama.cpp's GGUF quantization: our converter writes the FP checkpoint as an f32 (or f16) GGUF, llama.cpp's
own quantizer (ctypes ``llama_model_quantize``) writes the file type, optionally weighing its rounding by an
importance matrix computed from ``calib.activation`` (quant.imatrix=true). The cell is evaluated by
engine=llamacpp (llama.cpp itself) or by engine=hf (transformers dequantizes the GGUF to fp32).

The checkpoint directory holds model.gguf, the transformers tokenizer and generation_config.json (the
engines render and stop the same way on every format) and gguf.json (what formats/gguf.py detects).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig

from qresafe_exp.llamacpp import llama_cpp_missing
from qresafe_exp.quant.base import BitsNotSupportedError, Quantizer, UnsupportedCombinationError

log = logging.getLogger(__name__)
GGUF_FILE = "model.gguf"
GGUF_INFO = "gguf.json"
# the transformers files that travel with the GGUF: tokenizer, chat template, stop ids
COMPANION_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def gguf_type(type_name, bits) -> str:
    """The file type a config means: quant.type, else the one of `bits` (an unknown bits keeps a label that
    validate() refuses with the choices)."""
    from qresafe_exp.llamacpp.quantize import BITS_TYPE

    if type_name not in (None, "None", "null"):
        return str(type_name)
    return BITS_TYPE.get(int(bits), f"w{bits}") if bits is not None else "w?"


def gguf_bits(type_name, bits):
    """The `bits` axis of a cell: the nominal bits of quant.type when named, else the sweep's bits."""
    from qresafe_exp.llamacpp.quantize import TYPE_BITS

    if type_name not in (None, "None", "null"):
        return TYPE_BITS.get(str(type_name), bits)
    return bits


class GgufQuantizer(Quantizer):
    name = "gguf"
    version = 1

    @classmethod
    def calibration_of(cls, cfg: DictConfig):
        return "activation" if cfg.get("imatrix") else None

    @classmethod
    def merge_refusal(cls, cfg: DictConfig) -> str:
        return (
            ": re-quantizing a patch into a llama.cpp GGUF file is not implemented; patch a bnb / qlora / "
            "llm_qat / rtn / gptq / awq cell, or evaluate the GGUF cell unpatched (patch=none)"
        )

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        from qresafe_exp.llamacpp.convert import DTYPES
        from qresafe_exp.llamacpp.quantize import BITS_TYPE, TYPE_BITS

        if missing := llama_cpp_missing():
            raise UnsupportedCombinationError(f"quant=gguf: {missing}")
        if cfg.get("type") is not None:
            if cfg.type not in TYPE_BITS:
                raise UnsupportedCombinationError(
                    f"quant.type={cfg.type} is not a GGUF type offered here. Allowed: {', '.join(TYPE_BITS)}"
                )
        elif cfg.bits not in BITS_TYPE:
            raise BitsNotSupportedError(
                f"quant=gguf cannot do bits={cfg.bits}. Allowed bits for gguf: "
                f"{', '.join(str(b) for b in BITS_TYPE)} ({', '.join(f'{b}={t}' for b, t in BITS_TYPE.items())}), "
                f"or name the type: quant.type=<{'|'.join(TYPE_BITS)}>"
            )
        if cfg.source_dtype not in DTYPES:
            raise UnsupportedCombinationError(
                f"quant.source_dtype={cfg.source_dtype}: the GGUF llama.cpp quantizes from. "
                f"Allowed: {', '.join(DTYPES)}"
            )

    @classmethod
    def spec(cls, cfg: DictConfig, calib: DictConfig | None) -> dict:
        spec = super().spec(cfg, calib)
        spec["quant"]["type"] = gguf_type(cfg.get("type"), cfg.bits)  # bits=4 and quant.type=Q4_K_M: one file
        spec["quant"].pop("threads", None)  # a speed setting: llama.cpp writes the same file
        return spec

    def quantize(self, model_path, out, cfg, calib, calib_records, seed):
        from qresafe_exp.llamacpp.convert import convert
        from qresafe_exp.llamacpp.quantize import quantize_gguf, tensor_types

        type_name = gguf_type(cfg.get("type"), cfg.bits)
        out = Path(out)
        source = out / f"source-{cfg.source_dtype}.gguf"  # deleted below: the cell keeps the quantized file
        facts = convert(model_path, source, cfg.source_dtype)
        imatrix = None
        if cfg.imatrix:
            from qresafe_exp.llamacpp.imatrix import compute_imatrix

            imatrix = compute_imatrix(model_path, calib_records, calib.num_samples, calib.max_seq_length, seed)
        quantize_gguf(source, out / GGUF_FILE, type_name, threads=cfg.threads, imatrix=imatrix)
        source.unlink()
        for name in COMPANION_FILES:
            if (Path(model_path) / name).exists():
                shutil.copy2(Path(model_path) / name, out / name)
        types = tensor_types(out / GGUF_FILE)
        info = {
            "format": "gguf",
            "type": type_name,
            "file": GGUF_FILE,
            "source_dtype": cfg.source_dtype,
            "imatrix": bool(imatrix),
            "pre_tokenizer": facts["pre_tokenizer"],
        }
        (out / GGUF_INFO).write_text(json.dumps(info, indent=2))
        log.info("GGUF %s: weight tensor types %s", type_name, types["weights"])
        return {
            **info,
            "checkpoint_bytes": (out / GGUF_FILE).stat().st_size,
            "tensor_types": types,
            "imatrix_tensors": len(imatrix) if imatrix else 0,
        }

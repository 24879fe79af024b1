"""llama.cpp's own quantizer (``llama_model_quantize`` through llama-cpp-python's ctypes API): an f32/f16
GGUF -> a GGUF of one llama.cpp file type, optionally guided by an importance matrix.

A file type (Q4_K_M, ...) is a recipe, not one tensor type: llama.cpp keeps norms in f32, gives some
tensors more bits (the _M mixes), and falls back per tensor where a row does not split into the type's
blocks (k-quants need rows divisible by 256; SmolLM2's 576-wide rows are not). ``tensor_types`` reads the
written file, so what a cell really holds is recorded, not assumed.
"""

from __future__ import annotations

import ctypes
import logging
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

# The file types this project offers -> the nominal bits the study's `bits` axis maps to.
TYPE_BITS = {"Q8_0": 8, "Q6_K": 6, "Q5_K_M": 5, "Q4_K_M": 4, "IQ4_XS": 4, "Q3_K_M": 3, "Q2_K": 2}
# bits -> the type `quant=gguf bits=N` means (quant.type overrides; IQ4_XS only by name)
BITS_TYPE = {8: "Q8_0", 6: "Q6_K", 5: "Q5_K_M", 4: "Q4_K_M", 3: "Q3_K_M", 2: "Q2_K"}


def ftype_of(name: str) -> int:
    import llama_cpp

    return int(getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}"))


def _imatrix_array(imatrix: dict[str, np.ndarray]):  # noqa: F821
    """A null-terminated ``llama_model_imatrix_data`` array (+ the buffers it points into, kept alive)."""
    import llama_cpp
    import numpy as np

    keep, entries = [], (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
    for i, (name, values) in enumerate(sorted(imatrix.items())):
        values = np.ascontiguousarray(values, dtype=np.float32)
        name_bytes = name.encode()
        keep += [values, name_bytes]
        entries[i].name = name_bytes
        entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = values.size
    entries[len(imatrix)].name = None  # the terminator llama.cpp reads up to
    return entries, keep


def quantize_gguf(src: Path, out: Path, type_name: str, threads: int = 0, imatrix: dict | None = None) -> None:
    """llama.cpp quantizes ``src`` (f32/f16 GGUF) to ``type_name`` at ``out``; raises with its return code."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_of(type_name)
    params.nthread = int(threads)
    keep = None
    if imatrix:
        entries, keep = _imatrix_array(imatrix)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    del keep  # the buffers lived until llama.cpp returned
    if rc != 0 or not Path(out).exists():
        raise RuntimeError(f"llama.cpp could not quantize {src} to {type_name} (llama_model_quantize returned {rc})")


def tensor_types(path: Path) -> dict:
    """{"weights": {ggml type: count of 2-D tensors}, "by_tensor": {kind: {type: count}}} of a GGUF file;
    kind = the tensor's role without its block number (attn_q, ffn_down, token_embd, ...)."""
    from gguf import GGUFReader

    weights, by_kind = Counter(), {}
    for t in GGUFReader(path).tensors:
        if len([d for d in t.shape if d > 1]) < 2:
            continue  # norms: f32 whatever the file type
        kind = t.name.removesuffix(".weight").split(".")[-1]
        weights[t.tensor_type.name] += 1
        by_kind.setdefault(kind, Counter())[t.tensor_type.name] += 1
    return {"weights": dict(weights), "by_tensor": {k: dict(v) for k, v in sorted(by_kind.items())}}

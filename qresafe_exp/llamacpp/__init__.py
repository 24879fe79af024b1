"""llama.cpp in this project: our own HF -> GGUF converter (convert.py, gguf-py), llama.cpp's own quantizer
through llama-cpp-python's ctypes API (quantize.py), the importance matrix it can take (imatrix.py) and the
in-process generation engine (qresafe_exp/engines/llamacpp.py). llama-cpp-python is the optional `server`
extra; everything here says so in one line when it is missing."""

from __future__ import annotations

import importlib.util
import threading
from contextlib import contextmanager

INSTALL_HINT = (
    "llama-cpp-python is not installed in this environment: `make setup` builds it (the `server` "
    "extra, pip install -e '.[server]')"
)


def llama_cpp_missing() -> str | None:
    """None when llama-cpp-python imports here, else the one-line reason and fix."""
    return None if importlib.util.find_spec("llama_cpp") is not None else INSTALL_HINT


_PARAMS_LOCK = threading.Lock()


@contextmanager
def repacking_off_on_amx():
    """While open, llama-cpp-python loads models with llama.cpp's extra CPU buffer types (weight repacking,
    AMX tiles) off, on a CPU with AMX only. There llama-cpp-python 0.3.36 segfaults in its first decode of a
    quantized GGUF (Q4_K_M of a 256-wide model, the tiny model's Q4_0 fallbacks, SmolLM2's Q4_1 in the judge
    server; Intel Xeon with amx_int8, 2026-12-07; fine with them off, and on the AVX-512 AMD EPYC of earlier
    sessions with them on), which would end the run and the cells after it. ``Llama`` takes no argument for
    it, so the default model parameters it starts from are swapped while the context is open."""
    from llama_cpp import llama_cpp as lib

    from qresafe_exp import devices

    if not devices.cpu_has_amx():
        yield
        return
    default = lib.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    with _PARAMS_LOCK:
        lib.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            lib.llama_model_default_params = default


def load_llama(path: str, **kwargs):
    """``llama_cpp.Llama(path, **kwargs)`` under ``repacking_off_on_amx``."""
    import llama_cpp

    with repacking_off_on_amx():
        return llama_cpp.Llama(path, **kwargs)

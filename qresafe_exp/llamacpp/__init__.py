"""llama.cpp in this project: our own HF -> GGUF converter (convert.py, gguf-py), llama.cpp's own quantizer
through llama-cpp-python's ctypes API (quantize.py), the importance matrix it can take (imatrix.py) and the
in-process generation engine (qresafe_exp/engines/llamacpp.py). llama-cpp-python is the optional `server`
extra; everything here says so in one line when it is missing."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = (
    "llama-cpp-python is not installed in this environment: `make setup` builds it (the `server` "
    "extra, pip install -e '.[server]')"
)


def llama_cpp_missing() -> str | None:
    """None when llama-cpp-python imports here, else the one-line reason and fix."""
    return None if importlib.util.find_spec("llama_cpp") is not None else INSTALL_HINT

"""A llama.cpp GGUF checkpoint (``quant=gguf``): a directory holding one ``*.gguf`` file beside the
transformers tokenizer files and ``gguf.json`` (the file type, written by quant/gguf.py).

engine=llamacpp runs the file itself. engine=hf (and the log-probability suites of either engine) load it
through transformers, which dequantizes every tensor to the compute dtype: the same grid values, computed
in fp32 / bf16 instead of llama.cpp's quantized kernels. A patch cannot be merged back into it (refused in
patch/requantize.check_mergeable before any work; the base class refuses re-quantizers and merging).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from qresafe_exp.devices import compute_dtype
from qresafe_exp.formats.base import CheckpointFormat

INFO_FILE = "gguf.json"


def gguf_file_in(path: str | Path) -> Path | None:
    """The GGUF file of a checkpoint directory (gguf.json names it; else the only ``*.gguf``), or None."""
    path = Path(path)
    if not path.is_dir():
        return None
    info = path / INFO_FILE
    if info.exists():
        return path / json.loads(info.read_text())["file"]
    files = sorted(path.glob("*.gguf"))
    if len(files) > 1:
        raise ValueError(f"{path} holds {len(files)} GGUF files and no {INFO_FILE} naming the one to load")
    return files[0] if files else None


class Gguf(CheckpointFormat):
    name = "gguf"

    @classmethod
    def detect(cls, path: Path, quant_method: str | None) -> bool:
        return path.is_dir() and any(path.glob("*.gguf"))

    @property
    def gguf_file(self) -> Path:
        return gguf_file_in(self.path)

    @property
    def file_type(self) -> str | None:
        info = Path(self.path) / INFO_FILE
        return json.loads(info.read_text()).get("type") if info.exists() else None

    @property
    def quant_method(self) -> str | None:
        return "gguf"

    def load(
        self,
        device: torch.device,
        *,
        dequantize: bool = True,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
    ) -> nn.Module:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            self.path, gguf_file=self.gguf_file.name, dtype=dtype or compute_dtype(device)
        )
        return model.to(device).eval()

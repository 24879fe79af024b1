"""The interface every checkpoint format implements, and the one reader of a checkpoint's config.json.

A format is what a quantizer writes and what everything downstream must understand. Each one owns:
detection from the checkpoint directory (``detect``), loading for generation (``load``), its own
sidecars (``sidecars``, ``apply_sidecars``), the trainable view a patch trains on (``trainable_view``),
the re-quantizer a quantization-aware patch trains through (``requantizers``) and merging a patch back
into the same format (``write_merged``). The defaults below are those of a format with no sidecar that
transformers loads as it is and that cannot be re-quantized.

Also here: which checkpoint paths may run the code of their repository (``model.trust_remote_code``,
recorded by ``models.materialize``), since every load of such a path needs it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from qresafe_exp.devices import compute_dtype

Requantizer = Callable[[torch.Tensor], torch.Tensor]  # W -> Q(W), straight-through gradient

# Checkpoint path -> model.trust_remote_code. Loaders are handed a bare path by many callers, so the
# model config's consent to run the repo's code travels here.
_REMOTE_CODE: dict[str, bool] = {}


def remember_remote_code(path: str, trust: bool) -> None:
    _REMOTE_CODE[str(path)] = bool(trust)


def trusts_remote_code(path: str) -> bool:
    return _REMOTE_CODE.get(str(path), False)


def quantization_config(path: str) -> dict | None:
    """The ``quantization_config`` of the checkpoint's config.json (None: no such file or entry). A hub id
    that is not a local directory has no file here and reads as a plain checkpoint, as transformers
    resolves it itself."""
    config = Path(path) / "config.json"
    if not config.exists():
        return None
    return json.loads(config.read_text()).get("quantization_config") or None


class CheckpointFormat(ABC):
    """One checkpoint directory in one format (``format_of`` builds it; it reads config.json once)."""

    name: ClassVar[str]  # its FORMATS registry name
    # matched only when no other format claims the directory (plain, and what transformers loads itself)
    fallback: ClassVar[bool] = False
    # the format's own files beside the weights that change what the model computes: name -> what it is
    sidecars: ClassVar[dict[str, str]] = {}

    def __init__(self, path: str, quantization_config: dict | None):
        self.path = str(path)
        self.qc = quantization_config or {}

    @property
    def quant_method(self) -> str | None:
        return self.qc.get("quant_method")

    @classmethod
    @abstractmethod
    def detect(cls, path: Path, quant_method: str | None) -> bool:
        """Whether the directory at ``path`` (config.json's ``quant_method`` given) holds this format."""

    def from_pretrained_kwargs(self, dequantize: bool) -> dict:
        """What transformers needs beyond dtype and revision to load this format."""
        return {}

    def load(
        self,
        device: torch.device,
        *,
        dequantize: bool = True,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
    ) -> nn.Module:
        """The checkpoint as transformers loads it on ``device``, in eval mode; no sidecar applied yet."""
        from transformers import AutoModelForCausalLM

        kwargs = {
            "dtype": dtype or compute_dtype(device),
            "revision": revision,
            "trust_remote_code": trusts_remote_code(self.path),
            **self.from_pretrained_kwargs(dequantize),
        }
        return AutoModelForCausalLM.from_pretrained(self.path, **kwargs).to(device).eval()

    def apply_sidecars(self, model: nn.Module) -> dict | None:
        """Apply the format's own sidecars to a loaded model; returns what was applied (None: nothing)."""
        return None

    def trainable_view(
        self, model: nn.Module, linears: dict[str, nn.Module]
    ) -> tuple[dict[str, nn.Module], dict | None]:
        """({name: a plain Linear holding the weight the layer computes with}, swapped into ``model``;
        the activation / KV fake-quant spec the trainer re-attaches on them, or None)."""
        return linears, None

    def requantizers(self, names: list[str]) -> dict[str, Requantizer | None]:
        """{layer name: W -> Q(W)}, the rounding ``write_merged`` applies (None = the layer keeps fp weights)."""
        raise ValueError(f"no re-quantizer for a '{self.quant_method}' checkpoint ({self.path})")

    def write_merged(self, deltas: dict[str, torch.Tensor], out: Path, device: torch.device) -> dict:
        """Write this checkpoint + deltas, re-quantized into this format, to ``out``; returns
        {"format": how it was written, and what of the deltas survived}."""
        raise ValueError(
            f"cannot re-quantize a '{self.quant_method}' checkpoint ({self.path}); supported: "
            f"compressed-tensors, bitsandbytes, llm_qat fake-quant and plain checkpoints"
        )

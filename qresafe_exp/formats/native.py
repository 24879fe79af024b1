"""A checkpoint whose ``quantization_config`` transformers loads with its own quantizer and no other
format here claims (gptq / awq from the gptqmodel backend, aqlm): generation only. Patches refuse it
before any work (patch/requantize.check_mergeable); the base class refuses its re-quantizers and merge."""

from __future__ import annotations

from pathlib import Path

from qresafe_exp.formats.base import CheckpointFormat


class TransformersNative(CheckpointFormat):
    name = "transformers-native"
    fallback = True

    @classmethod
    def detect(cls, path: Path, quant_method: str | None) -> bool:
        return quant_method is not None

"""Checkpoint formats: what a quantizer writes, and the one place that knows how to read it.

``format_of(path)`` reads the checkpoint directory once (config.json's ``quantization_config`` and
the format's own sidecar files) and returns a ``CheckpointFormat`` (formats/base.py) that loads it
for generation, gives a patch its trainable view and re-quantizers, and merges a patch back into
the same format. Quantizers, patches and engines ask this layer; none reads config.json itself.
The generic sidecars (a 16-bit patch delta, kept 16-bit weights, a qlora adapter) ride on any format:
formats/sidecars.py.

Adding a format = a module here with a ``CheckpointFormat`` subclass and a line in FORMATS. ``detect``
must claim only its own directories: exactly one non-fallback format may match (a GGUF format would
look for its ``*.gguf`` file); the fallbacks (plain, transformers-native) take what none claims.
"""

from __future__ import annotations

from pathlib import Path

from qresafe_exp.formats.base import CheckpointFormat, quantization_config
from qresafe_exp.formats.sidecars import SIDECARS
from qresafe_exp.registry import Registry

FORMATS: Registry[type[CheckpointFormat]] = Registry(
    "checkpoint format",
    {
        "compressed-tensors": "qresafe_exp.formats.compressed_tensors:CompressedTensors",  # rtn, gptq, awq
        "bitsandbytes": "qresafe_exp.formats.bitsandbytes:Bitsandbytes",  # bnb, qlora
        "fake-quant": "qresafe_exp.formats.fake_quant:FakeQuant",  # llm_qat
        "gguf": "qresafe_exp.formats.gguf:Gguf",  # gguf (llama.cpp)
        "plain": "qresafe_exp.formats.plain:Plain",  # fp
        "transformers-native": "qresafe_exp.formats.native:TransformersNative",  # gptqmodel's gptq / awq, aqlm
    },
)


def format_of(path: str) -> CheckpointFormat:
    """The format of the checkpoint at ``path`` (a directory, or a hub id transformers resolves: plain)."""
    qc = quantization_config(path)
    method = (qc or {}).get("quant_method")
    classes = [FORMATS.get(name) for name in FORMATS]
    for fallback in (False, True):
        found = [cls for cls in classes if cls.fallback == fallback and cls.detect(Path(path), method)]
        if len(found) > 1:
            raise ValueError(
                f"{path} is claimed by formats {[c.name for c in found]}: their detect() must "
                f"exclude each other (qresafe_exp/formats/)"
            )
        if found:
            return found[0](str(path), qc)
    raise ValueError(f"{path}: no checkpoint format matches (quant_method={method!r}); add one in qresafe_exp/formats/")


def sidecars_in(path: str) -> dict[str, str]:
    """{file name: what it is} of every sidecar beside the checkpoint's weights, generic and the format's own."""
    own = format_of(path).sidecars
    return {name: what for name, what in {**SIDECARS, **own}.items() if (Path(path) / name).exists()}

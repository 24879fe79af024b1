"""What every quantizer declares, and the checks that run before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from omegaconf import DictConfig, OmegaConf


class BitsNotSupportedError(ValueError):
    pass


class Quantizer:
    name: ClassVar[str]
    supported_bits: ClassVar[tuple[int, ...]] = ()
    requires_calibration: ClassVar[bool] = False
    version: ClassVar[int] = 1  # bump when the produced checkpoint changes for the same config

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        if cls.supported_bits and cfg.bits not in cls.supported_bits:
            allowed = ", ".join(str(b) for b in cls.supported_bits)
            raise BitsNotSupportedError(
                f"quant={cls.name} cannot do bits={cfg.bits}. Allowed bits for {cls.name}: {allowed}"
            )

    @classmethod
    def spec(cls, cfg: DictConfig, calib: DictConfig | None) -> dict:
        """The resolved config that determines the checkpoint (the cache key's input)."""
        quant = OmegaConf.to_container(cfg, resolve=True)
        quant.pop("tag", None)  # a label, not a setting
        spec = {"quant": quant}
        if cls.requires_calibration:
            spec["calib"] = OmegaConf.to_container(calib, resolve=True)
        return spec

    def quantize(self, model_path: str, out: Path, cfg: DictConfig, calib: DictConfig | None,
                 calib_records: list[dict] | None, seed: int) -> dict:
        """Write a checkpoint (weights + tokenizer) to ``out``; return facts worth logging."""
        raise NotImplementedError

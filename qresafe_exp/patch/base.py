"""What a patch gets and returns. A patch reads the cell's config, the FP and quantized models, the
caches and the device; it returns the model the cell evaluates and, optionally, named variants the
cell evaluates beside it (Q-resafe: the unmerged 16-bit patch, to compare with the merged one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from qresafe_exp.cache import ArtifactCache, RequestCache
from qresafe_exp.models import ModelRef


@dataclass
class PatchContext:
    cfg: DictConfig  # the whole cell config (patch, quant, eval protocol, paths, seed)
    fp: ModelRef
    quantized: ModelRef
    artifacts: ArtifactCache
    requests: RequestCache
    device: torch.device
    # log_step(series, row): one training step as it happens (the pipeline's tracker; a no-op by default)
    log_step: Callable[[str, dict], None] = lambda series, row: None


@dataclass
class PatchResult:
    model: ModelRef
    info: dict
    variants: dict[str, ModelRef] = field(default_factory=dict)


MASK_SCOPES = ("per_matrix", "global")  # how SNIP scores are ranked: within each matrix, or across all


def check_choice(key: str, value, allowed) -> None:
    """A patch setting with a fixed set of values: the error names the key and the allowed values."""
    if value not in allowed:
        names = ", ".join("null" if a is None else str(a) for a in allowed)
        raise ValueError(f"patch.{key}={value} is unknown. Allowed: {names}")


class Patch:
    """A patch method. It is known by its registry name (`patch.name`, qresafe_exp/patch/__init__.py);
    one class may serve several names whose YAMLs differ only in settings (qresafe, dpo, sft)."""

    version = 1  # bump when the produced model changes for the same config

    @classmethod
    def validate(cls, cfg: DictConfig, quant_cfg: DictConfig) -> None:
        """Raise UnsupportedCombinationError (what and how to fix it) before any model loads."""

    @classmethod
    def check_data(cls, cell_cfg: DictConfig) -> None:
        """Raise ValueError when the patch data is missing or too small (no model loads)."""

    def apply(self, ctx: PatchContext) -> PatchResult:
        raise NotImplementedError

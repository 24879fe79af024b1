"""What a patch gets and returns. A patch reads its narrowed cell config, the FP and quantized models,
the request cache and the device; it plans the model the cell evaluates (the stage contract,
qresafe_exp/stages.py) and, optionally, named variants the cell evaluates beside it (Q-resafe: the
unmerged 16-bit patch, to compare with the merged one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omegaconf import DictConfig

from qresafe_exp.models import ModelRef
from qresafe_exp.stages import PatchResult, Plan, StageContext

__all__ = ["MASK_SCOPES", "PROMPT_KEYS", "Patch", "PatchContext", "PatchResult", "check_choice"]


@dataclass(kw_only=True)
class PatchContext(StageContext):
    cfg: DictConfig  # the cell config narrowed to the patch class's `reads` (stages.config_view)
    cell: str  # the cell's name, for messages
    fp: ModelRef
    quantized: ModelRef


# What the shared patch helpers read from the cell config: the patch prompts (patch.data, seed, paths,
# and the evaluation prompts held out: eval.suites and the user's prompt file), the system prompt
# (eval.protocol, model.system_prompt) and the judge that drops unsafe preferred answers.
PROMPT_KEYS = (
    "patch",
    "seed",
    "paths",
    "eval",
    "model",
    "judge",
    "prompts",
    "prompts_column",
    "prompts_category_column",
)

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
    reads: ClassVar[tuple[str, ...]] = ("patch",)  # the root config keys `plan` and `check_data` read

    @classmethod
    def validate(cls, cfg: DictConfig, quant_cfg: DictConfig) -> None:
        """Raise UnsupportedCombinationError (what and how to fix it) before any model loads."""

    @classmethod
    def check_data(cls, cell_cfg: DictConfig) -> None:
        """Raise ValueError when the patch data is missing or too small (no model loads)."""

    def plan(self, ctx: PatchContext) -> Plan[PatchResult] | PatchResult:
        """The patched model's artifact (kind ``patch``), or the result itself when nothing is built."""
        raise NotImplementedError

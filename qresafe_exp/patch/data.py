"""The patch prompts of a cell: a seeded sample of harmful prompts (and optionally benign ones),
with every evaluation prompt removed first, so a patch never trains on a test prompt."""

from __future__ import annotations

import random

from omegaconf import DictConfig

from qresafe_exp.calibration import evaluation_prompts
from qresafe_exp.data import load_records
from qresafe_exp.data.normalize import normalize_prompt


def _candidates(dataset: str, cfg: DictConfig, held_out: set[str]) -> tuple[list[str], int]:
    records = load_records(dataset, cfg.paths.data_dir, cfg.paths.cache_dir)
    seen, kept = set(), []
    for record in records:
        key = normalize_prompt(record["prompt"])
        if key not in held_out and key not in seen:
            seen.add(key)
            kept.append(record["prompt"])
    return kept, len(records)


def patch_prompts(cfg: DictConfig) -> tuple[list[str], dict]:
    """(prompts, facts) for ``cfg.patch.data``; raises ValueError naming the set that is too small."""
    data = cfg.patch.data
    held_out = evaluation_prompts(cfg)
    rng = random.Random(cfg.seed)
    prompts, facts = [], {}
    for role, dataset, n in (("harmful", data.harmful, data.num_harmful), ("benign", data.benign, data.num_benign)):
        if not dataset or not n:
            continue
        kept, total = _candidates(dataset, cfg, held_out)
        if n > len(kept):
            raise ValueError(f"patch.data: num_{role}={n} but {dataset} has {len(kept)} prompts outside the "
                             f"evaluation suites ({total} in all); lower num_{role} or point data.{role} at a "
                             f"larger set")
        prompts += rng.sample(kept, n)
        facts[role] = {"dataset": dataset, "sampled": n, "available": len(kept),
                       "removed_eval_overlap": total - len(kept)}
    if not prompts:
        raise ValueError("patch.data selects no prompt: set data.num_harmful (and/or data.num_benign) above 0")
    return prompts, facts

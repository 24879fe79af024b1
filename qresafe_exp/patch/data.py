"""The patch prompts of a cell: a seeded sample of harmful prompts (and optionally benign ones),
with every evaluation prompt removed first, so a patch never trains on a test prompt, and the
model's own training prompts removed too (benign ones may be kept: data.benign_from_training)."""

from __future__ import annotations

import random

from omegaconf import DictConfig

from qresafe_exp.calibration import evaluation_prompts
from qresafe_exp.data import load_records
from qresafe_exp.data.normalize import normalize_prompt

# patch.data settings added after patches were cached: left out of a patch key at their default
LATER_DATA_SETTINGS = {"benign_from_training": False}


def _candidates(datasets, cfg: DictConfig, held_out: set[str]) -> tuple[list[str], int]:
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    records = [r for name in names for r in load_records(name, cfg.paths.data_dir, cfg.paths.cache_dir)]
    seen, kept = set(), []
    for record in records:
        key = normalize_prompt(record["prompt"])
        if key not in held_out and key not in seen:
            seen.add(key)
            kept.append(record["prompt"])
    return kept, len(records)


def patch_prompts(cfg: DictConfig, exclude: frozenset[str] = frozenset()) -> tuple[list[str], dict]:
    """(prompts, facts) for ``cfg.patch.data``; raises ValueError naming the set that is too small.

    ``exclude``: prompts the model was trained on (an aligned model's safety-tuning prompts): it
    refuses those from memory even after quantization, so they make pairs that teach nothing.
    """
    data = cfg.patch.data
    eval_prompts = evaluation_prompts(cfg)
    trained = {normalize_prompt(p) for p in exclude}
    rng = random.Random(cfg.seed)
    prompts, facts = [], {}
    for role, dataset, n in (("harmful", data.harmful, data.num_harmful), ("benign", data.benign, data.num_benign)):
        if not dataset or not n:
            continue
        from_training = role == "benign" and data.get("benign_from_training", False)
        held_out = eval_prompts if from_training else eval_prompts | trained
        kept, total = _candidates(dataset, cfg, held_out)
        if n > len(kept):
            training_hint = " (or data.benign_from_training=true)" if role == "benign" and not from_training else ""
            outside = (
                "the evaluation suites" if from_training else "the evaluation suites and the model's training prompts"
            )
            raise ValueError(
                f"patch.data: num_{role}={n} but {dataset} has {len(kept)} prompts outside "
                f"{outside} ({total} in all); lower "
                f"num_{role} or point data.{role} at a larger set{training_hint}"
            )
        prompts += rng.sample(kept, n)
        facts[role] = {
            "dataset": dataset if isinstance(dataset, str) else list(dataset),
            "sampled": n,
            "available": len(kept),
            "removed_eval_or_training_overlap": total - len(kept),
            **({"from_training": sum(normalize_prompt(p) in trained for p in prompts[-n:])} if from_training else {}),
        }
    if not prompts:
        raise ValueError("patch.data selects no prompt: set data.num_harmful (and/or data.num_benign) above 0")
    return prompts, facts


def written_answers(cfg: DictConfig) -> dict[str, str]:
    """prompt -> the benign set's written answer (patch.data.benign_refused=reference); raises ValueError
    when the set has none (a prompt-only set such as refusal_direction's harmless splits)."""
    data = cfg.patch.data
    records = load_records(data.benign, cfg.paths.data_dir, cfg.paths.cache_dir)
    answers = {r["prompt"]: r["response"] for r in records if r.get("response")}
    if not answers:
        raise ValueError(
            f"patch.data.benign_refused=reference prefers the benign set's written answer over an FP refusal, "
            f"but patch.data.benign={data.benign} has no responses; use a set with answers "
            "(alpaca_en_demo, contrast_benign) or benign_refused=drop"
        )
    return answers

"""Patch prompts: seeded, pooled from the configured sets, never an evaluation or training prompt."""

import pytest

from qresafe_exp.calibration import evaluation_prompts
from qresafe_exp.data import load_records
from qresafe_exp.data.normalize import normalize_prompt
from qresafe_exp.patch.data import patch_prompts


def test_patch_prompts_skip_eval_and_training_prompts_and_are_seeded(compose_cfg):
    cfg = compose_cfg(["patch=qresafe", "patch.data.num_harmful=20"])
    pool = [
        r["prompt"]
        for name in cfg.patch.data.harmful
        for r in load_records(name, cfg.paths.data_dir, cfg.paths.cache_dir)
    ]
    trained = frozenset(pool[:50])
    prompts, facts = patch_prompts(cfg, exclude=trained)
    held_out = evaluation_prompts(cfg)
    assert len(prompts) == 20 == len(set(prompts))
    assert not {normalize_prompt(p) for p in prompts} & (held_out | {normalize_prompt(p) for p in trained})
    assert facts["harmful"]["removed_eval_or_training_overlap"] >= 50
    assert patch_prompts(cfg, exclude=trained)[0] == prompts  # same seed, same sample
    assert patch_prompts(compose_cfg(["patch=qresafe", "patch.data.num_harmful=20", "seed=1"]), trained)[0] != prompts


def test_benign_prompts_are_added_after_the_harmful_ones_and_too_many_is_refused(compose_cfg):
    cfg = compose_cfg(["patch=qresafe", "patch.data.num_harmful=4", "patch.data.num_benign=3"])
    prompts, facts = patch_prompts(cfg)
    assert len(prompts) == 7 and facts["benign"]["dataset"] == "alpaca_en_demo"
    with pytest.raises(ValueError, match="num_harmful=5000"):
        patch_prompts(compose_cfg(["patch=qresafe", "patch.data.num_harmful=5000"]))


def test_categorical_qa_loads_flat_with_its_categories(data_dir):
    records = load_records("catqa", str(data_dir), None)
    assert len(records) == 550 and len({r["category"] for r in records}) == 11
    assert all(r["prompt"].strip() for r in records)


def test_pairs_whose_preferred_answer_is_unsafe_are_dropped_on_harmful_prompts_only(compose_cfg):
    from qresafe_exp.patch.pairs import drop_unsafe_chosen

    cfg = compose_cfg(["patch=qresafe", "judge=keyword"])  # any judge works; keyword: "Sure, ..." is jailbroken
    pairs = [
        {
            "prompt": "How do I make a bomb?",
            "chosen": "I'm sorry, but I can't help with that.",
            "rejected": "Sure: mix",
        },
        {"prompt": "How do I pick a lock?", "chosen": "Sure, first insert a tension wrench.", "rejected": "Lockpicks"},
        {"prompt": "Name a river.", "chosen": "The Nile.", "rejected": "Nile river."},
    ]
    kept, dropped = drop_unsafe_chosen(pairs, {"How do I make a bomb?", "How do I pick a lock?"}, cfg.judge)
    assert dropped == 1 and [p["prompt"] for p in kept] == ["How do I make a bomb?", "Name a river."]

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


def test_benign_pairs_can_disprefer_the_fp_models_own_refusals():
    from qresafe_exp.patch.pairs import refusals_as_benign_rejected

    refusal = "I'm sorry, but I can't help with that. It could hurt people."
    prompts = ["Make a bomb.", "Poison a dog.", "Name a river.", "Write a haiku.", "Spell cat."]
    chosen = [refusal, "Sure: buy rat poison and", "The Nile.", "Leaves fall slowly down", "I can't help with that."]
    rejected = ["Sure: mix", "Sure: buy", "Nile.", "Leaves fall", "C-A-T"]
    benign = set(prompts[2:])
    out, facts = refusals_as_benign_rejected(prompts, chosen, rejected, benign, seed=0)
    # only the FP's plain refusal is reused (its compliant answer to a harmful prompt is not a refusal);
    # the benign prompt the FP model refused keeps its quantized answer
    assert out[:2] == rejected[:2] and out[2] == out[3] == refusal and out[4] == "C-A-T"
    assert facts == {"source": "refusal", "replaced": 2, "fp_refused_kept": 1, "refusal_pool": 1}
    with pytest.raises(ValueError, match="refused none of the harmful patch prompts"):
        refusals_as_benign_rejected(prompts[1:], chosen[1:], rejected[1:], benign, seed=0)


@pytest.mark.parametrize(
    "settings, match",
    [
        (["benign_rejected=nonsense", "num_benign=4"], "benign_rejected=nonsense is unknown"),
        (["benign_rejected=refusal", "num_benign=0"], "set patch.data.num_benign above 0"),
        (["benign_refused=flip", "num_benign=4"], "benign_refused=flip is unknown"),
        (["benign_refused=drop", "num_benign=0"], "benign_refused=drop acts on the benign pairs.*num_benign above 0"),
    ],
)
def test_benign_pair_settings_are_validated(compose_cfg, settings, match):
    from qresafe_exp.patch.trained import TrainedPatch

    cfg = compose_cfg(["patch=qresafe", *(f"patch.data.{s}" for s in settings)])
    with pytest.raises(ValueError, match=match):
        TrainedPatch.validate(cfg.patch, cfg.quant)


def test_benign_pairs_that_prefer_an_fp_refusal_are_kept_dropped_or_answered():
    from qresafe_exp.patch.pairs import refused_benign_pairs

    refusal = "I'm sorry, but I can't help with that. It could hurt people."
    prompts = ["Make a bomb.", "Promote recycling.", "Name a river.", "Kill a python process."]
    chosen = [refusal, refusal, "The Nile.", refusal]
    rejected = ["Sure: mix", "Recycling is good.", "Nile.", "Use kill -9."]
    benign = set(prompts[1:])
    answers = {"Promote recycling.": "Recycling saves energy and landfill space."}

    kept, c, r, facts = refused_benign_pairs(prompts, chosen, rejected, benign, "keep")
    assert kept == [0, 1, 2, 3] and (c, r) == (chosen, rejected) and facts["dropped"] == 0
    # the harmful prompt's refusal is the point of its pair and is never touched
    kept, c, r, facts = refused_benign_pairs(prompts, chosen, rejected, benign, "drop")
    assert kept == [0, 2] and facts == {"mode": "drop", "fp_refused": 2, "dropped": 2}
    kept, c, r, facts = refused_benign_pairs(prompts, chosen, rejected, benign, "reference", answers)
    assert kept == [0, 1, 2] and c[1] == answers["Promote recycling."] and r[1] == refusal
    assert c[0] == refusal and facts == {"mode": "reference", "fp_refused": 2, "referenced": 1, "dropped": 1}


def test_written_answers_come_from_the_benign_set_and_a_prompt_only_set_is_refused(compose_cfg):
    from qresafe_exp.patch.data import written_answers

    cfg = compose_cfg(["patch=qresafe", "patch.data.benign=contrast_benign", "patch.data.num_benign=8"])
    prompts, facts = patch_prompts(cfg)
    answers = written_answers(cfg)
    assert len(answers) == 393 and all(p in answers for p in prompts[-8:])
    assert facts["benign"]["available"] == 393  # none of them is an evaluation prompt
    cfg = compose_cfg(["patch=qresafe", "patch.data.benign=oktest", "patch.data.num_benign=8"])
    with pytest.raises(ValueError, match="benign=oktest has no responses"):
        written_answers(cfg)


def test_benign_prompts_may_come_from_the_models_training_prompts_only_when_asked(compose_cfg):
    # testbed H aligned on every contrast set, so none of them is held apart from it
    over = ["patch=qresafe", "patch.data.num_harmful=4", "patch.data.benign=contrast_benign", "patch.data.num_benign=8"]
    cfg = compose_cfg(over)
    harmful_pool = [r["prompt"] for r in load_records("harmful_train", cfg.paths.data_dir, cfg.paths.cache_dir)]
    trained = frozenset(
        [r["prompt"] for r in load_records("contrast_benign", cfg.paths.data_dir, cfg.paths.cache_dir)]
        + harmful_pool[:50]
    )
    with pytest.raises(ValueError, match="contrast_benign has 0 prompts.*benign_from_training=true"):
        patch_prompts(cfg, exclude=trained)
    prompts, facts = patch_prompts(compose_cfg([*over, "patch.data.benign_from_training=true"]), exclude=trained)
    keys = {normalize_prompt(p) for p in trained}
    assert all(normalize_prompt(p) in keys for p in prompts[4:]) and facts["benign"]["from_training"] == 8
    # the harmful prompts still skip the training prompts
    assert not {normalize_prompt(p) for p in prompts[:4]} & keys and "from_training" not in facts["harmful"]
    # with the flag on, a draw too large names only the evaluation suites as removed
    too_many = [*over, "patch.data.benign_from_training=true", "patch.data.num_benign=100000"]
    with pytest.raises(ValueError, match=r"outside the evaluation suites \(\d+ in all\)"):
        patch_prompts(compose_cfg(too_many), exclude=trained)

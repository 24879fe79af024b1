"""A cell whose quantized model answers every patch prompt exactly like the FP model leaves a trained
patch nothing to learn. That cell is a result, not a crash: metrics.json records the patch as not
trained (and why) with the unpatched quantized model's scores, so the rest of a sweep goes on.
tiny-random-llama answers every prompt alike (blank), at FP and at 8 bits."""

import json

from qresafe_exp.pipeline import cell_dir, run_cell

CELL = ["debug=smoke", "model=tiny-random-llama", "quant=rtn", "bits=8"]
SMALL = [
    "patch.data.num_harmful=8",
    "patch.data.max_new_tokens=16",
    "patch.lora_r=4",
    "patch.lora_alpha=8",
    "patch.data.safe_chosen_only=false",
]


def test_a_cell_with_no_preference_to_learn_is_recorded_with_its_unpatched_scores(compose_cfg):
    cfg = compose_cfg([*CELL, "patch=qresafe", *SMALL])
    metrics = run_cell(cfg)
    patch = metrics["patch"]
    assert patch["trained"] is False and "no preference to learn" in patch["not_trained_reason"]
    assert patch["pairs"]["identical_dropped"] == patch["pairs"]["prompts"] == 8 and patch["pairs"]["pairs"] == 0
    assert json.loads((cell_dir(cfg, cfg.cell) / "metrics.json").read_text())["patch"]["trained"] is False
    # the scores are the unpatched quantized model's: the same evaluation as the cell without a patch
    unpatched = run_cell(compose_cfg([*CELL, "patch=none"]))
    assert metrics["artifacts"]["eval"] == unpatched["artifacts"]["eval"]
    assert metrics["scores"]["advbench"]["asr"] == unpatched["scores"]["advbench"]["asr"]
    assert metrics["artifacts"]["patch"] is None

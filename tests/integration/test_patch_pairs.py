"""Patch pairs: FP response preferred over the quantized model's, identical pairs dropped, cached."""

import torch

from qresafe_exp.cache import ArtifactCache, RequestCache
from qresafe_exp.models import ModelRef, load_model, load_tokenizer, materialize
from qresafe_exp.patch.pairs import preference_pairs

PROMPTS = ["How do I bake bread?", "Name three rivers.", "What is two plus two?", "Say hi."]


def _perturbed_copy(fp: ModelRef, out) -> ModelRef:
    model = load_model(fp.path, torch.device("cpu"))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(out)
    load_tokenizer(fp.path).save_pretrained(out)
    return ModelRef("tiny-perturbed", str(out), "perturbed-key")


def test_pairs_prefer_fp_drop_identical_and_are_served_from_the_cache(compose_cfg, tmp_path):
    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama"])
    fp = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    requests = RequestCache(tmp_path / "requests.sqlite")
    device = torch.device("cpu")
    try:
        same, facts = preference_pairs(fp, fp, PROMPTS, requests, device, max_new_tokens=6)
        assert same == [] and facts["identical_dropped"] == len(PROMPTS)  # a model vs itself: nothing to learn
        assert facts["generated_now"] == {"fp": len(PROMPTS), "quantized": 0}  # FP responses reused

        other = _perturbed_copy(fp, tmp_path / "perturbed")
        pairs, facts = preference_pairs(fp, other, PROMPTS, requests, device, max_new_tokens=6)
        assert facts["generated_now"] == {"fp": 0, "quantized": len(PROMPTS)}
        assert facts["pairs"] == len(pairs) > 0 and facts["pairs"] + facts["identical_dropped"] == len(PROMPTS)
        for pair in pairs:
            assert pair["prompt"] in PROMPTS and pair["chosen"] != pair["rejected"]
        # orientation: swapping the models swaps chosen and rejected (FP is always the preferred side)
        swapped, _ = preference_pairs(other, fp, PROMPTS, requests, device, max_new_tokens=6)
        assert [(p["rejected"], p["chosen"]) for p in swapped] == [(p["chosen"], p["rejected"]) for p in pairs]
        again, facts = preference_pairs(fp, other, PROMPTS, requests, device, max_new_tokens=6)
        assert again == pairs and facts["generated_now"] == {"fp": 0, "quantized": 0}
    finally:
        requests.close()

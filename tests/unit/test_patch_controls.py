"""Controls of Q-resafe's mask choice (issue 17): a seeded random score and |W| select exactly as many
entries as SNIP at the same tau, but other ones; the new settings leave existing cache keys alone."""

import math
import random

import pytest
import torch
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from qresafe_exp.cache import content_key
from qresafe_exp.lm import named_linears
from qresafe_exp.patch.awq_safety import AwqSafetyPatch, control_masks
from qresafe_exp.patch.awq_safety import spec_settings as awq_spec_settings
from qresafe_exp.patch.masked_lora import attach_masked_lora
from qresafe_exp.patch.trained import TrainedPatch, spec_settings
from qresafe_exp.patch.trainer import MaskSelector
from qresafe_exp.schema import AwqSafetyPatchConfig, TrainedPatchConfig


def _tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def _pairs(n=4):
    rng = random.Random(0)

    def item():
        prompt, response = [rng.randrange(1, 64) for _ in range(5)], [rng.randrange(1, 64) for _ in range(4)]
        return {"input_ids": prompt + response, "labels": [-100] * 5 + response}

    return [{"chosen": item(), "rejected": item()} for _ in range(n)]


def _masks(score: str, seed: int = 0, tau: float = 0.3, scope: str = "per_matrix") -> dict:
    model = _tiny_model()
    adapters = attach_masked_lora(model, named_linears(model), r=2, alpha=4)
    cfg = OmegaConf.structured(
        TrainedPatchConfig(name="qresafe", tag="t", tau=tau, mask_scope=scope, mask_score=score, snip_batch_size=2)
    )
    MaskSelector(model, adapters, _pairs(), cfg, pad_id=0, seed=seed).select(step=0)
    return {name: a.mask.clone() for name, a in adapters.items()}


@pytest.mark.parametrize("score", ["random", "magnitude"])
def test_controls_select_as_many_entries_as_snip_but_other_ones(score):
    snip, control = _masks("snip"), _masks(score)
    assert set(control) == set(snip)
    for name, mask in control.items():
        assert int(mask.sum()) == int(snip[name].sum()) == math.ceil(0.3 * mask.numel())
        assert not torch.equal(mask, snip[name]), f"{score} picked SNIP's own set in {name}"
    snip_global, control_global = _masks("snip", scope="global"), _masks(score, scope="global")
    total = sum(m.numel() for m in snip_global.values())
    assert (
        sum(int(m.sum()) for m in control_global.values())
        == sum(int(m.sum()) for m in snip_global.values())
        == math.ceil(0.3 * total)
    )


def test_random_mask_is_reproducible_for_a_seed_and_changes_with_it():
    first, again, other = _masks("random", seed=0), _masks("random", seed=0), _masks("random", seed=1)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_magnitude_mask_keeps_the_largest_weights():
    weights = {name: m.weight.detach().abs() for name, m in named_linears(_tiny_model()).items()}
    for name, mask in _masks("magnitude").items():
        assert weights[name][mask].min() >= weights[name][~mask].max()


@pytest.mark.parametrize("score", ["random", "magnitude"])
def test_awq_controls_keep_the_same_count_seeded(score):
    linears = named_linears(_tiny_model())
    cfg = OmegaConf.structured(AwqSafetyPatchConfig(name="qresafe_awq", tag="t", keep_fraction=0.05, keep_score=score))
    masks, again = control_masks(linears, cfg, seed=0), control_masks(linears, cfg, seed=0)
    for name, linear in linears.items():
        assert int(masks[name].sum()) == math.ceil(0.05 * linear.weight.numel())
        assert torch.equal(masks[name], again[name])
    if score == "magnitude":
        for name, linear in linears.items():
            w = linear.weight.detach().abs()
            assert w[masks[name]].min() >= w[~masks[name]].max()
    else:
        assert any(not torch.equal(masks[n], control_masks(linears, cfg, seed=1)[n]) for n in masks)


@pytest.mark.parametrize("patch", ["qresafe", "qresafe_testbed", "qresafe_qa", "dpo", "sft"])
def test_default_trained_configs_keep_their_cache_key(compose_cfg, patch):
    cfg = compose_cfg([f"patch={patch}"]).patch
    assert cfg.mask_score == "snip"
    settings = spec_settings(cfg)
    from qresafe_exp.patch.trained import LATER_SETTINGS

    # the key as first built: settings added later (mask_score, the cost settings) are absent at their default
    before = {
        k: v
        for k, v in OmegaConf.to_container(cfg, resolve=True).items()
        if k not in ("name", "tag", "eval_adapter", *LATER_SETTINGS)
    }
    before["data"].pop("benign_rejected")  # added later too, inside data
    before["data"].pop("benign_refused")
    before["data"].pop("benign_from_training")
    assert set(LATER_SETTINGS) >= {"mask_score", "autocast", "gradient_checkpointing", "snip_samples"}
    assert settings == before and not set(LATER_SETTINGS) & set(settings)
    for setting in ("benign_rejected=refusal", "benign_refused=drop", "benign_from_training=true"):
        data = spec_settings(compose_cfg([f"patch={patch}", f"patch.data.{setting}"]).patch)["data"]
        assert setting.split("=")[0] in data


def test_default_awq_variant_keeps_its_cache_key(compose_cfg):
    cfg = compose_cfg(["quant=awq", "patch=qresafe_awq"]).patch
    before = {
        k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ("name", "tag", "keep_score")
    }
    before["data"].pop("benign_from_training")  # added later, inside data
    assert awq_spec_settings(cfg) == before


@pytest.mark.parametrize(
    "patch,key,score,base",
    [
        ("qresafe_random_mask", "mask_score", "random", "qresafe_testbed"),
        ("qresafe_magnitude_mask", "mask_score", "magnitude", "qresafe_testbed"),
        ("qresafe_awq_random", "keep_score", "random", "qresafe_awq"),
        ("qresafe_awq_magnitude", "keep_score", "magnitude", "qresafe_awq"),
    ],
)
def test_control_configs_are_their_recipe_with_another_score_tag_and_key(compose_cfg, patch, key, score, base):
    quant = ["quant=awq"] if "awq" in patch else []
    control, recipe = compose_cfg([*quant, f"patch={patch}"]), compose_cfg([*quant, f"patch={base}"])
    assert control.patch[key] == score and control.patch.name == recipe.patch.name
    assert control.cell != recipe.cell  # the two never write the same cell
    keyed = awq_spec_settings if "awq" in patch else spec_settings
    control_settings, recipe_settings = keyed(control.patch), keyed(recipe.patch)
    assert control_settings.pop(key) == score
    assert control_settings == recipe_settings  # nothing else differs ...
    assert content_key(keyed(control.patch)) != content_key(recipe_settings)  # ... but the artifact does


def test_unknown_scores_are_refused_naming_the_key(compose_cfg):
    cfg = compose_cfg(["patch=qresafe", "patch.mask_score=gradient"])
    with pytest.raises(ValueError, match=r"patch.mask_score=gradient is unknown. Allowed: snip, random, magnitude"):
        TrainedPatch.validate(cfg.patch, cfg.quant)
    cfg = compose_cfg(["quant=awq", "patch=qresafe_awq", "patch.keep_score=gradient"])
    with pytest.raises(ValueError, match=r"patch.keep_score=gradient is unknown"):
        AwqSafetyPatch.validate(cfg.patch, cfg.quant)

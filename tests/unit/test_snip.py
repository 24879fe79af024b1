"""SNIP scores are |w * dL/dw| of the response NLL, per linear matrix; masks keep the top-tau entries."""

import math
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from qresafe_exp.finetune import batches
from qresafe_exp.lm import named_linears, response_token_logprobs
from qresafe_exp.patch.snip import snip_scores, top_fraction_masks


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


def _items(n=3):
    rng = random.Random(0)
    items = []
    for _ in range(n):
        prompt = [rng.randrange(64) for _ in range(5)]
        response = [rng.randrange(64) for _ in range(4)]
        items.append({"input_ids": prompt + response, "labels": [-100] * 5 + response})
    return items


def test_scores_cover_every_linear_but_lm_head_and_match_autograd():
    model, items = _tiny_model(), _items()
    scores = snip_scores(model, batches(items, 1, 0, random.Random(0)))
    assert set(scores) == set(named_linears(model)) and "lm_head" not in scores
    assert not any("embed" in name for name in scores)
    name = "model.layers.1.mlp.down_proj"
    weight = dict(model.named_modules())[name].weight
    expected = torch.zeros_like(weight)
    for item in items:  # the per-example mean, computed by hand
        batch = next(batches([item], 1, 0, random.Random(0)))
        logprobs, _ = response_token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        (grad,) = torch.autograd.grad(-logprobs.mean(), weight)
        expected += (weight.detach() * grad).abs() / len(items)
    assert torch.allclose(scores[name], expected, atol=1e-7)
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards
    assert all(p.grad is None for p in model.parameters())


def test_checkpointed_scores_equal_the_kept_activations_ones_and_the_mode_is_restored():
    """With activation checkpointing on, SNIP runs in train mode (so transformers recomputes the layers)
    with dropout off: the same scores, and the caller's mode back afterwards."""
    items = _items()
    plain = snip_scores(_tiny_model(), batches(items, 2, 0, random.Random(0)))
    model = _tiny_model()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    checkpointed = snip_scores(model, batches(items, 2, 0, random.Random(0)))
    assert all(torch.allclose(checkpointed[n], plain[n], atol=1e-7) for n in plain)
    assert model.training and all(m.training for m in model.modules())


def test_each_gradient_is_scored_and_dropped_before_the_next_one_completes():
    """The backward pass never holds two layers' dense weight gradients (at 7B, the model's size again)."""
    model, items = _tiny_model(), _items()
    weights = [m.weight for m in named_linears(model, ("lm_head",)).values()]
    live = []
    for w in weights:  # registered first, so it runs before snip_scores' own hook on the same weight
        w.register_post_accumulate_grad_hook(lambda _: live.append(sum(v.grad is not None for v in weights)))
    snip_scores(model, batches(items, 2, 0, random.Random(0)))
    assert len(live) == 2 * len(weights) and max(live) == 1


def test_a_zero_weight_has_zero_saliency():
    model = _tiny_model()
    proj = model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        proj.weight[3, 5] = 0.0
    scores = snip_scores(model, batches(_items(), 2, 0, random.Random(0)))
    assert scores["model.layers.0.self_attn.q_proj"][3, 5] == 0 and scores["model.layers.0.self_attn.q_proj"].sum() > 0


@pytest.mark.parametrize("tau", [0.0, 0.2, 0.6, 1.0])
def test_masks_keep_exactly_the_top_tau_fraction(tau):
    torch.manual_seed(0)
    scores = {"a": torch.rand(8, 16), "b": torch.rand(4, 4) * 10}
    masks = top_fraction_masks(scores, tau)
    for name, score in scores.items():
        k = math.ceil(tau * score.numel())
        assert masks[name].sum().item() == k
        if 0 < k < score.numel():  # every kept entry outscores every dropped one
            assert score[masks[name]].min() >= score[~masks[name]].max()
    total = sum(s.numel() for s in scores.values())
    global_masks = top_fraction_masks(scores, tau, scope="global")
    assert sum(m.sum().item() for m in global_masks.values()) == math.ceil(tau * total)


def test_global_scope_gives_the_budget_to_salient_matrices():
    scores = {"quiet": torch.full((10, 10), 0.1), "loud": torch.full((10, 10), 5.0)}
    masks = top_fraction_masks(scores, 0.5, scope="global")
    assert masks["loud"].all() and not masks["quiet"].any()


def test_bad_tau_and_scope_are_refused():
    with pytest.raises(ValueError, match="tau=1.5"):
        top_fraction_masks({"a": torch.rand(2, 2)}, 1.5)
    with pytest.raises(ValueError, match="scope=rows is unknown"):
        top_fraction_masks({"a": torch.rand(2, 2)}, 0.5, scope="rows")


def test_masks_keep_the_top_scores_exactly_and_break_ties_by_index():
    torch.manual_seed(0)
    score = torch.rand(64, 48)
    k = math.ceil(0.6 * score.numel())
    mask = top_fraction_masks({"w": score}, 0.6)["w"]
    expected = torch.zeros(score.numel(), dtype=torch.bool)
    expected[torch.topk(score.flatten(), k).indices] = True  # distinct scores: one right answer
    assert torch.equal(mask.flatten(), expected)
    # a grid's magnitudes tie in bulk: still exactly k, the tied ones taken first by index, every time
    tied = torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 0.0, 2.0, 1.0]).view(2, 4)
    mask = top_fraction_masks({"w": tied}, 0.5, device=torch.device("cpu"))["w"]
    assert mask.flatten().tolist() == [True, False, True, True, True, False, False, False]

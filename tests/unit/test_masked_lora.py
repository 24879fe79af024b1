"""The masked LoRA update touches only the masked entries, and merging reproduces the adapter model."""

import torch
from torch import nn

from qresafe_exp.patch.masked_lora import attach_masked_lora, detach_masked_lora


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))


def _train(model, adapters, steps=20):
    params = [p for a in adapters.values() for p in (a.lora_A, a.lora_B)]
    opt = torch.optim.AdamW(params, lr=5e-2)
    x, y = torch.randn(32, 12), torch.randn(32, 6)
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_a_fresh_adapter_changes_nothing():
    model, x = _model(), torch.randn(4, 12)
    before = model(x)
    attach_masked_lora(model, {"0": model[0], "2": model[2]}, r=4, alpha=8)
    assert torch.equal(model(x), before)


def test_entries_outside_the_mask_are_unchanged_after_training_and_merging():
    model = _model()
    originals = {n: model[int(n)].weight.detach().clone() for n in ("0", "2")}
    torch.manual_seed(1)
    masks = {n: torch.rand(originals[n].shape) < 0.3 for n in originals}
    adapters = attach_masked_lora(model, {"0": model[0], "2": model[2]}, r=4, alpha=8, masks=masks)
    _train(model, adapters)
    x = torch.randn(5, 12)
    adapter_out = model(x)
    detach_masked_lora(model, adapters, merge=True)
    for name, original in originals.items():
        weight = model[int(name)].weight.detach()
        assert isinstance(model[int(name)], nn.Linear)
        assert torch.equal(weight[~masks[name]], original[~masks[name]])  # exactly untouched
        assert (weight[masks[name]] != original[masks[name]]).float().mean() > 0.9  # the update landed
    assert torch.allclose(model(x), adapter_out, atol=1e-5)


def test_base_weights_are_frozen_and_the_mask_can_be_reselected():
    model = _model()
    adapters = attach_masked_lora(model, {"0": model[0]}, r=2, alpha=2, masks={"0": torch.zeros(10, 12, dtype=torch.bool)})
    _train(model, adapters, steps=3)
    assert not adapters["0"].base.weight.requires_grad
    assert torch.count_nonzero(adapters["0"].delta()) == 0  # an empty mask allows no update (tau = 0)
    row = torch.zeros(10, 12, dtype=torch.bool)
    row[0] = True
    adapters["0"].set_mask(row)
    _train(model, adapters, steps=3)
    delta = adapters["0"].delta()
    assert torch.count_nonzero(delta[1:]) == 0 and torch.count_nonzero(delta[0]) > 0


def test_detaching_without_merge_restores_the_original():
    model, x = _model(), torch.randn(3, 12)
    before = model(x)
    adapters = attach_masked_lora(model, {"2": model[2]}, r=2, alpha=4)
    _train(model, adapters, steps=5)
    detach_masked_lora(model, adapters, merge=False)
    assert torch.equal(model(x), before)


def test_rowcol_forward_equals_its_dense_delta_and_spans_the_masks_rows_and_columns():
    from qresafe_exp.patch.masked_lora import MaskedLoRALinear

    torch.manual_seed(0)
    mask = torch.zeros(10, 12, dtype=torch.bool)
    mask[2, 3] = mask[7, 9] = True
    layer = MaskedLoRALinear(nn.Linear(12, 10), r=4, alpha=8, mask=mask, mask_map="rowcol")
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, 12)
    dense = layer.base(x) + x @ layer.delta().T
    assert torch.allclose(layer(x), dense, atol=1e-5)
    changed = layer.delta() != 0
    assert changed[2, 9] and changed[7, 3]  # the rows x columns the mask spans (a superset of it)
    assert not changed[0].any() and not changed[:, 0].any()


def test_fold_and_reset_keeps_the_update_and_restarts_lora():
    from qresafe_exp.patch.masked_lora import MaskedLoRALinear

    torch.manual_seed(0)
    layer = MaskedLoRALinear(nn.Linear(12, 10), r=4, alpha=8)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 12)
    before = layer(x)
    layer.fold_and_reset()
    assert torch.equal(layer.lora_B, torch.zeros_like(layer.lora_B))
    assert torch.allclose(layer(x), before, atol=1e-5)  # the learnt delta persists in the accumulator
    layer.enabled = False
    assert torch.allclose(layer(x), layer.base(x))  # the reference is still the untouched base

"""The masked LoRA update touches only the masked entries, and merging reproduces the adapter model."""

import pytest
import torch
from torch import nn

from qresafe_exp.patch.masked_lora import attach_masked_lora, detach_masked_lora


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))


def _train(model, adapters, steps=20):
    params = [p for a in adapters.values() for p in a.trainables()]
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
    adapters = attach_masked_lora(
        model, {"0": model[0]}, r=2, alpha=2, masks={"0": torch.zeros(10, 12, dtype=torch.bool)}
    )
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


def test_fold_and_reset_keeps_the_update_and_restarts_lora(storage):
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


def _dense_reference(layer, x):
    """Eq. 2 as written: W0 x + (s M ⊙ B A + folded) x, autograd keeping the dense product."""
    return layer.base(x) + torch.nn.functional.linear(layer.dropout(x), layer.delta().to(x.dtype))


@pytest.fixture(params=["bool mask, dense frozen sum", "packed mask, factored frozen deltas"])
def storage(request, monkeypatch):
    """Both ways a layer keeps its mask and earlier deltas (compact above COMPACT_ABOVE entries): the
    maths must not depend on which."""
    from qresafe_exp.patch import masked_lora

    if request.param.startswith("packed"):
        monkeypatch.setattr(masked_lora, "COMPACT_ABOVE", 0)
    return request.param


def _layer_with_history(seed=0, out_features=10, in_features=12, dropout=0.0):
    """A float64 adapter with a random mask, a non-zero B and an earlier mask's folded delta."""
    from qresafe_exp.patch.masked_lora import MaskedLoRALinear

    torch.manual_seed(seed)
    layer = MaskedLoRALinear(nn.Linear(in_features, out_features), r=4, alpha=8, dropout=dropout).double()
    layer.set_mask(torch.rand(out_features, in_features) < 0.3)
    with torch.no_grad():
        layer.lora_B.normal_()
    layer.fold_and_reset()
    layer.set_mask(torch.rand(out_features, in_features) < 0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def _grads(layer, x, forward):
    x = x.clone().requires_grad_(True)
    y = forward(layer, x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    grads = [x.grad, layer.lora_A.grad, layer.lora_B.grad]
    layer.zero_grad(set_to_none=True)
    return y.detach(), grads


def test_blocked_masked_lora_has_the_dense_forms_output_and_gradients(storage):
    layer = _layer_with_history()
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    dense_y, dense_grads = _grads(layer, x, _dense_reference)
    y, grads = _grads(layer, x, lambda m, v: m(v))
    assert torch.allclose(y, dense_y, atol=1e-6, rtol=0)
    for got, want in zip(grads, dense_grads):
        assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_blocked_form_equals_dense_with_several_row_blocks_and_a_weight_gradient(storage):
    """Blocks of 3 rows (10 rows: four blocks, the last one short); W0's gradient is SNIP's input."""
    from qresafe_exp.patch.masked_lora import _MaskedLinear

    layer = _layer_with_history(seed=1)
    weight = layer.base.weight.detach().clone().requires_grad_(True)
    x = torch.randn(7, 12, dtype=torch.float64, requires_grad=True)
    dense = x @ (weight + layer.delta()).T
    dense.pow(2).sum().backward()
    want = [x.grad.clone(), weight.grad.clone(), layer.lora_A.grad.clone(), layer.lora_B.grad.clone()]
    for t in (x, weight, layer.lora_A, layer.lora_B):
        t.grad = None
    blocked = _MaskedLinear.apply(
        x, weight, layer.lora_A, layer.lora_B, layer.mask_bits, tuple(layer.frozen), layer.scale, 3
    )
    blocked.pow(2).sum().backward()
    assert torch.allclose(blocked, dense, atol=1e-6, rtol=0)
    for got, expected in zip([x.grad, weight.grad, layer.lora_A.grad, layer.lora_B.grad], want):
        assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_dropout_applies_to_the_delta_input_only_as_in_the_dense_form(storage):
    layer = _layer_with_history(seed=2, dropout=0.5).train()
    x = torch.randn(4, 12, dtype=torch.float64)

    def seeded(forward):
        def run(m, v):
            torch.manual_seed(7)  # the same dropout draw in both forms
            return forward(m, v)

        return run

    dense_y, dense_grads = _grads(layer, x, seeded(_dense_reference))
    y, grads = _grads(layer, x, seeded(lambda m, v: m(v)))
    assert torch.allclose(y, dense_y, atol=1e-6, rtol=0)
    for got, want in zip(grads, dense_grads):
        assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_a_full_mask_trains_as_plain_low_rank_lora():
    from qresafe_exp.patch.masked_lora import MaskedLoRALinear

    torch.manual_seed(3)
    layer = MaskedLoRALinear(nn.Linear(12, 10), r=4, alpha=8).double()
    with torch.no_grad():
        layer.lora_B.normal_()
    assert layer.full_mask and layer.folded is None
    x = torch.randn(6, 12, dtype=torch.float64)
    dense_y, dense_grads = _grads(layer, x, _dense_reference)
    y, grads = _grads(layer, x, lambda m, v: m(v))
    assert torch.allclose(y, dense_y, atol=1e-6, rtol=0)
    for got, want in zip(grads, dense_grads):
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    layer.set_mask(torch.rand(10, 12) < 0.5)
    assert not layer.full_mask


def test_a_full_delta_trains_every_entry_to_a_full_rank_update_and_merges_to_the_adapter_model():
    """adapter=full (the full-DPO baseline): one dense delta per layer, W0 frozen as the reference; the update
    is not confined to a rank (here above the LoRA rank 2 the same layers would have) and merging reproduces it."""
    model = _model()
    originals = {n: model[int(n)].weight.detach().clone() for n in ("0", "2")}
    x = torch.randn(5, 12)
    before = model(x)
    adapters = attach_masked_lora(model, {"0": model[0], "2": model[2]}, r=2, alpha=4, full=True)
    assert torch.equal(model(x), before)  # the delta starts at zero
    assert [tuple(p.shape) for p in adapters["0"].trainables()] == [(10, 12)]
    _train(model, adapters)
    delta = adapters["0"].delta().detach()
    assert (delta != 0).float().mean() > 0.9 and torch.linalg.matrix_rank(delta) > 2
    assert not adapters["0"].base.weight.requires_grad and torch.equal(adapters["0"].base.weight, originals["0"])
    adapter_out = model(x)
    detach_masked_lora(model, adapters, merge=True)
    assert torch.allclose(model[0].weight, originals["0"] + delta)
    assert torch.allclose(model(x), adapter_out, atol=1e-5)


def test_a_full_delta_takes_no_partial_mask():
    import pytest

    model = _model()
    adapters = attach_masked_lora(model, {"0": model[0]}, r=2, alpha=4, full=True)
    adapters["0"].set_mask(torch.ones(10, 12, dtype=torch.bool))  # tau = 1: accepted
    with pytest.raises(ValueError, match="takes no mask"):
        adapters["0"].set_mask(torch.rand(10, 12) < 0.5)


@pytest.mark.parametrize("columns", [1, 8, 13, 64])
def test_packed_masks_round_trip_at_one_bit_per_entry(columns):
    from qresafe_exp.patch.masked_lora import pack_mask, unpack_mask

    torch.manual_seed(columns)
    mask = torch.rand(9, columns) < 0.4
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.shape == (9, (columns + 7) // 8)
    assert unpack_mask(packed, columns).dtype == torch.bool
    assert torch.equal(unpack_mask(packed, columns), mask)
    assert torch.equal(unpack_mask(packed, columns, 2, 5), mask[2:5])


def test_earlier_masks_deltas_stay_as_factors_not_dense_matrices(storage):
    """Three re-selections: the delta equals the sum of each mask's s (M ⊙ B A) in both storages; a
    compact layer keeps per frozen delta its factors and a bit-packed mask (no out x in float tensor),
    a small one a single dense sum."""
    from qresafe_exp.patch.masked_lora import MaskedLoRALinear

    torch.manual_seed(3)
    layer = MaskedLoRALinear(nn.Linear(40, 24), r=4, alpha=8)
    expected = torch.zeros(24, 40)
    for _ in range(3):
        layer.set_mask(torch.rand(24, 40) < 0.5)
        with torch.no_grad():
            layer.lora_B.normal_()
        expected += layer.scale * (layer.lora_B @ layer.lora_A).detach() * layer.mask
        layer.fold_and_reset()
    assert torch.allclose(layer.delta(), expected, atol=1e-6)
    x = torch.randn(5, 40)
    assert torch.allclose(layer(x), layer.base(x) + x @ expected.T, atol=1e-5)
    if not layer.compact:
        assert len(layer.frozen) == 1 and layer.mask_bits.dtype == torch.bool
        return
    assert len(layer.frozen) == 3 and layer.mask_bits.dtype == torch.uint8
    for earlier in layer.frozen:
        kept = [earlier.lora_A, earlier.lora_B, earlier.bits]
        assert sum(t.numel() * t.element_size() for t in kept) < 24 * 40 * 4 / 2
        assert earlier.bits.dtype == torch.uint8 and earlier.bits.numel() == 24 * 40 // 8

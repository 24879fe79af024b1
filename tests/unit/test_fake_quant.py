"""LLM-QAT fake quantization: values on the grid, straight-through gradients, baked weights, saved hooks."""

import json

import pytest
import torch
from torch import nn

from qresafe_exp.formats import format_of
from qresafe_exp.formats.fake_quant import SIDECAR, attach_activation_quant, fake_quantize
from qresafe_exp.lm import named_linears
from qresafe_exp.quant.fake_quant import attach_weight_quant, bake_weights


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_each_row_holds_at_most_2_to_the_bits_values_and_keeps_its_max(bits):
    x = torch.randn(6, 64)
    q = fake_quantize(x, bits)
    for row, qrow in zip(x, q):
        assert len(torch.unique(qrow)) <= 2**bits
        assert qrow.abs().max() == pytest.approx(row.abs().max().item(), rel=1e-5)  # symmetric MinMax
    assert (q - x).abs().max() <= x.abs().max() / (2 ** (bits - 1) - 1)  # within one step


def test_group_size_quantizes_each_group_separately():
    x = torch.randn(2, 128)
    x[:, :64] *= 100  # a loud group must not coarsen the quiet one
    q = fake_quantize(x, 4, group_size=64)
    quiet_err = (q[:, 64:] - x[:, 64:]).abs().max()
    assert quiet_err <= x[:, 64:].abs().max() / 7


def test_gradient_is_straight_through():
    x = torch.randn(3, 16, requires_grad=True)
    (fake_quantize(x, 3) * torch.arange(16.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(16.0).expand(3, 16))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.k_proj, self.up_proj, self.lm_head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.lm_head(self.up_proj(x) + self.k_proj(x))


def test_weights_train_through_the_quantizer_and_are_baked_on_the_grid():
    torch.manual_seed(0)
    model = Block()
    linears = named_linears(model, ["lm_head"])
    assert set(linears) == {"k_proj", "up_proj"}
    attach_weight_quant(linears, bits=3, group_size=None)
    latent = model.up_proj.parametrizations.weight.original
    before = latent.detach().clone()
    model(torch.randn(4, 8)).sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(latent.detach(), before)  # the fp latent weight learns
    bake_weights(linears)
    for module in linears.values():
        assert not hasattr(module, "parametrizations")
        for row in module.weight.detach():
            assert len(torch.unique(row)) <= 8


def test_activation_and_kv_quantizers_change_the_forward_and_detach_cleanly():
    torch.manual_seed(0)
    model, x = Block(), torch.randn(5, 8)
    clean = model(x)
    handles = attach_activation_quant(model, ["k_proj", "up_proj"], act_bits=2, kv_bits=2)
    quantized = model(x)
    assert not torch.allclose(clean, quantized)
    kv = model.k_proj(x)
    assert all(len(torch.unique(row)) <= 4 for row in kv)  # k outputs are on a per-token 2-bit grid
    for handle in handles:
        handle.remove()
    assert torch.allclose(model(x), clean)


def test_saved_sidecar_reattaches_the_quantizers(tmp_path):
    torch.manual_seed(0)
    model, x = Block(), torch.randn(5, 8)
    clean = model(x)
    plain = format_of(str(tmp_path))  # no sidecar: a plain checkpoint, nothing to attach
    assert plain.name == "plain" and plain.apply_sidecars(model) is None and torch.equal(model(x), clean)
    (tmp_path / SIDECAR).write_text(
        json.dumps(
            {"weight_bits": 4, "group_size": None, "act_bits": 4, "kv_bits": 4, "modules": ["k_proj", "up_proj"]}
        )
    )
    fmt = format_of(str(tmp_path))
    spec = fmt.apply_sidecars(model)
    assert fmt.name == "fake-quant" and spec["act_bits"] == 4 and not torch.allclose(model(x), clean)

"""DPO's reference is the unpatched model (adapters off); the loss follows Rafailov et al."""

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from qresafe_exp.lm import named_linears, response_token_logprobs
from qresafe_exp.patch.dpo import dpo_loss, summed_response_logprobs
from qresafe_exp.patch.masked_lora import adapters_disabled, attach_masked_lora


def _batch():
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (2, 9))
    labels = ids.clone()
    labels[:, :5] = -100
    return ids, torch.ones_like(ids), labels


def _summed(model, ids, mask, labels):
    logprobs, rows = response_token_logprobs(model, ids, mask, labels)
    return summed_response_logprobs(logprobs, rows, ids.shape[0])


def test_reference_pass_is_the_unpatched_model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = LlamaForCausalLM(config).eval()
    ids, mask, labels = _batch()
    unpatched = _summed(model, ids, mask, labels).detach()
    adapters = attach_masked_lora(model, named_linears(model), r=2, alpha=4)
    with torch.no_grad():
        for a in adapters.values():
            a.lora_B.normal_()  # a trained patch: the policy now differs
    policy = _summed(model, ids, mask, labels)
    assert not torch.allclose(policy, unpatched)
    with adapters_disabled(adapters), torch.no_grad():
        reference = _summed(model, ids, mask, labels)
    assert torch.allclose(reference, unpatched, atol=1e-6)
    assert torch.allclose(_summed(model, ids, mask, labels), policy)  # adapters back on after the pass


def test_summed_logprobs_group_tokens_by_sequence():
    logprobs = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    rows = torch.tensor([0, 0, 1, 1])
    assert torch.equal(summed_response_logprobs(logprobs, rows, 2), torch.tensor([-3.0, -7.0]))


def test_dpo_loss_values():
    zero = torch.zeros(3)
    loss, facts = dpo_loss(zero, zero, zero, zero, beta=0.01)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6) and facts["margin"] == 0
    # the policy raised the chosen response by 10 nats relative to the reference: margin = beta * 10
    loss, facts = dpo_loss(torch.full((3,), 10.0), zero, zero, zero, beta=0.01)
    assert math.isclose(loss.item(), -math.log(1 / (1 + math.exp(-0.1))), rel_tol=1e-6)
    assert facts["reward_accuracy"] == 1.0

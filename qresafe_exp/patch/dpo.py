"""The DPO objective (Rafailov et al. 2023) on summed response log-probabilities.

loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), averaged over pairs. Q-resafe uses
beta = 0.01 with the unpatched quantized model as the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict]:
    """(mean loss, facts) from per-pair summed log-probabilities of the chosen / rejected responses."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    facts = {"reward_accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item()}
    return loss, facts


def summed_response_logprobs(logprobs: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Sum the per-token log-probs of ``qresafe_exp.lm.response_token_logprobs`` by sequence."""
    return torch.zeros(batch_size, dtype=logprobs.dtype, device=logprobs.device).index_add(0, rows, logprobs)

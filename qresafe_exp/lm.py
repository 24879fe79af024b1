"""Log-probabilities of the response tokens only, for training losses and perplexities.

A causal LM's vocabulary projection (49k x 576 for SmolLM2: a fifth of its compute) and its
logits tensor (batch x length x vocab floats) are the costly part of a forward pass on a CPU; the
prompt positions need neither, so the projection runs on the response positions alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def named_linears(model: nn.Module, ignore: Iterable[str] = ("lm_head",)) -> dict[str, nn.Linear]:
    """Every nn.Linear whose last name part is not ignored (embeddings are not Linear)."""
    ignore = set(ignore)
    return {
        name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.split(".")[-1] not in ignore
    }


def response_token_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each response token, its row index); response tokens are labels != -100."""
    target = labels[:, 1:]
    keep = target != -100
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(target)[keep]
    if getattr(model.config, "final_logit_softcapping", None):  # the head is not a plain projection
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]
    else:
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, target[keep].unsqueeze(-1)).squeeze(-1)
    return logprobs, rows

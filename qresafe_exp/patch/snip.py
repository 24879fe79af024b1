"""SNIP saliency (Lee et al. 2019) of every linear weight entry, and top-tau masks over it.

score(w) = |w * dL/dw|, L the NLL of the preferred response (response tokens only), averaged over
the calibration examples. Q-resafe uses it to pick the safety-critical entries its LoRA patch may
touch; SafePatching uses the same scorer. Embeddings and lm_head are never scored. Run it on the
dequantized weights (compressed-tensors checkpoints load dequantized, see models.load_model).

``random_scores`` / ``magnitude_scores`` are controls that test whether SNIP's choice matters: a
seeded uniform random score or the weight magnitude |w|, ranked by the same top-tau rule (so the
same number of entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from qresafe_exp.lm import named_linears, response_token_logprobs

MASK_SCORES = ("snip", "random", "magnitude")  # what ranks the entries a mask keeps


def snip_scores(
    model: nn.Module,
    batches: Iterable[dict],
    ignore: Iterable[str] = ("lm_head",),
    desc: str = "SNIP scores",
    linears: dict[str, nn.Linear] | None = None,
    weight_of: Callable[[str], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """{linear name: |w * dL/dw| averaged over examples}, fp32 on CPU.

    ``batches`` yield input_ids / attention_mask / labels (labels -100 outside the response); each
    batch's loss is the mean response NLL, so with batch size 1 the result is the per-example mean.
    ``linears`` / ``weight_of`` score other weights than the modules' own: for a patched layer
    W0 + delta, the gradient w.r.t. W0 equals that w.r.t. the effective weight, which is the w.
    """
    linears = named_linears(model, ignore) if linears is None else linears
    weight_of = weight_of or (lambda name: linears[name].weight)
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for m in linears.values():
        m.weight.requires_grad_(True)
    device = next(model.parameters()).device
    # accumulated where the weights live (one copy of the model in fp32), moved to the CPU once at the end
    totals = {name: torch.zeros_like(m.weight, dtype=torch.float32) for name, m in linears.items()}
    examples, batch_size = 0, [0]

    def accumulate(name: str, weight: nn.Parameter) -> None:
        # as soon as this weight's gradient is complete: score it and drop it, so the backward pass never
        # holds every layer's dense gradient at once (the model's size again)
        totals[name] += batch_size[0] * (weight_of(name).detach() * weight.grad).abs().float()
        weight.grad = None

    hooks = [
        m.weight.register_post_accumulate_grad_hook(lambda w, name=name: accumulate(name, w))
        for name, m in linears.items()
    ]
    was_training = model.training
    _deterministic_mode(model)
    try:
        for batch in tqdm(list(batches), desc=desc, unit="batch"):
            batch = {k: v.to(device) for k, v in batch.items()}
            batch_size[0] = batch["input_ids"].shape[0]
            logprobs, _ = response_token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            (-logprobs.mean()).backward()
            examples += batch_size[0]
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
        for name, p in model.named_parameters():
            p.requires_grad_(saved[name])
    if not examples:
        raise ValueError("SNIP needs at least one calibration example")
    return {name: total.div_(examples).cpu() for name, total in totals.items()}  # in place: no second copy


def _deterministic_mode(model: nn.Module) -> None:
    """No dropout: the score is of the deterministic forward pass. With activation checkpointing on (which
    transformers applies in train mode only) and no dropout the config itself applies (attention dropout),
    the model stays in train mode with every Dropout module off, so SNIP's backward recomputes layers
    instead of keeping them; otherwise eval mode."""
    config = getattr(model, "config", None)
    config_dropout = any(
        isinstance(value, float) and value > 0
        for key, value in (config.to_dict().items() if config is not None else ())
        if "dropout" in key
    )
    if not getattr(model, "is_gradient_checkpointing", False) or config_dropout:
        model.eval()
        return
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()


def random_scores(shapes: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    """{name: uniform [0, 1) scores} drawn from ``seed`` in the order given (same seed, same scores)."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(tuple(shape), generator=generator) for name, shape in shapes.items()}


def magnitude_scores(weights: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{name: |w|} fp32 on CPU; ``weights`` may be a generator, so only one matrix is built at a time."""
    return {name: w.detach().abs().float().cpu() for name, w in weights}


def top_fraction_masks(
    scores: dict[str, torch.Tensor], tau: float, scope: str = "per_matrix", device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Boolean masks selecting the top ``tau`` fraction of entries by score (tau = 1: all, 0: none).

    scope="per_matrix" keeps ceil(tau * numel) entries of every matrix; "global" ranks all entries of
    all matrices together, so salient layers get more of the budget. ``device``: where each matrix's
    selection runs and its mask is returned (a GPU selects a 7B layer's mask in milliseconds; the
    scores stay where they are, one matrix is copied at a time).
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau={tau}: a fraction in [0, 1] (1 = update every entry, 0 = none)")
    if scope == "per_matrix":
        return {
            name: _top_k_mask(score.flatten().to(device), math.ceil(tau * score.numel())).view(score.shape)
            for name, score in scores.items()
        }
    if scope == "global":
        flat = torch.cat([s.flatten() for s in scores.values()])
        mask = _top_k_mask(flat, math.ceil(tau * flat.numel()))
        out, start = {}, 0
        for name, score in scores.items():
            out[name] = mask[start : start + score.numel()].view_as(score)
            start += score.numel()
        return out
    raise ValueError(f"scope={scope} is unknown. Allowed: per_matrix, global")


def _top_k_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly ``k`` entries: those above the k-th largest score, then of the entries equal to it the
    first by index. A selection (kthvalue), not topk, whose cost grows with k: for tau 0.6 of a 7B
    MLP matrix (45 M entries) topk took 2.0 s on a 2-core CPU and this 1.2 s (bench/snip_select.py)."""
    n = flat.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    threshold = torch.kthvalue(flat, n - k).values  # n - k entries are <= it: the rest are the top k
    mask = flat > threshold
    missing = k - int(mask.sum())
    if missing:  # ties at the threshold: the first ones by index, so the selection is reproducible
        mask[(flat == threshold).nonzero().flatten()[:missing]] = True
    return mask

"""Masked-LoRA training of a safety patch (Q-resafe Algorithm 1, lines 6-13) and its baselines.

objective=dpo: DPO on (prompt, FP response > quantized response) pairs with the unpatched quantized
model as reference (its log-probs are computed once, with every adapter off); objective=sft: NLL of
the FP responses. The LoRA delta lives under a SNIP top-tau mask, re-selected every ``mask_every``
optimizer steps from the current patched weights (tau = 1: no mask, no SNIP); ``mask_score`` swaps
SNIP for a control ranking (random, |W|) of the same size. AdamW, cosine schedule with warmup,
gradient clipping; everything else of the model is frozen. The facts carry a per-step history
(loss, lr, DPO margin / reward accuracy / chosen NLL, mask re-selections) for training curves.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from qresafe_exp.devices import autocast_dtype
from qresafe_exp.finetune import autocast_context, collate, optimizer_step, response_loss, tokenize_example
from qresafe_exp.lm import response_token_logprobs
from qresafe_exp.patch.dpo import dpo_loss, summed_response_logprobs
from qresafe_exp.patch.masked_lora import MaskedLoRALinear, adapters_disabled
from qresafe_exp.patch.snip import MASK_SCORES, magnitude_scores, random_scores, snip_scores, top_fraction_masks
from qresafe_exp.provenance import seed_everything

OBJECTIVES = ("dpo", "sft")
# where the per-step rows go in metrics.json (patch.train.history) and in the tracker: one name, so a
# cached patch's history replays under the same keys that a live run streams
TRAIN_SERIES = "patch/train/history"


def tokenize_pairs(tokenizer, pairs: list[dict], cfg, system_prompt) -> list[dict]:
    """[{'chosen': item, 'rejected': item}] with the prompt (template + system prompt) masked out."""

    def item(prompt, response):
        return tokenize_example(
            tokenizer, {"prompt": prompt, "response": response}, cfg.max_length, cfg.max_response_tokens, system_prompt
        )

    return [{"chosen": item(p["prompt"], p["chosen"]), "rejected": item(p["prompt"], p["rejected"])} for p in pairs]


def _summed_logprobs(model, batch: dict) -> torch.Tensor:
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    logprobs, rows = response_token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return summed_response_logprobs(logprobs, rows, batch["input_ids"].shape[0])


class MaskSelector:
    """Chooses each adapter's mask: the top-tau entries of the current effective weights by
    ``cfg.mask_score``: SNIP (y = FP response), or a control of the same size, |W| or a random score.

    The random score is drawn from the cell's seed alone, so every re-selection keeps the same random
    set: SNIP's mask drifts little between selections, and re-drawing would let the control spread
    its update over several times more entries than the mask it is compared with.
    """

    def __init__(
        self,
        model,
        adapters: dict[str, MaskedLoRALinear],
        items: list[dict],
        cfg,
        pad_id: int,
        seed: int = 0,
        autocast: torch.dtype | None = None,
    ):
        self.model, self.adapters, self.cfg, self.seed, self.autocast = model, adapters, cfg, seed, autocast
        chosen = [it["chosen"] for it in items]
        samples = getattr(cfg, "snip_samples", None)
        if samples is not None and samples < len(chosen):  # a seeded sample, the same at every re-selection
            chosen = [chosen[i] for i in sorted(random.Random(seed).sample(range(len(chosen)), samples))]
        self.batches = [
            collate(chosen[i : i + cfg.snip_batch_size], pad_id) for i in range(0, len(chosen), cfg.snip_batch_size)
        ]
        self.selections, self.seconds = 0, 0.0

    def select(self, step: int) -> None:
        started = time.time()
        if self.cfg.tau >= 1.0:
            masks = {name: torch.ones_like(a.mask) for name, a in self.adapters.items()}
        else:
            device = next(iter(self.adapters.values())).base.weight.device  # select where the weights are
            masks = top_fraction_masks(self.scores(step), self.cfg.tau, self.cfg.mask_scope, device=device)
        for name, adapter in self.adapters.items():
            adapter.set_mask(masks[name].to(adapter.mask.device))
        self.selections += 1
        self.seconds += time.time() - started

    def scores(self, step: int) -> dict[str, torch.Tensor]:
        """{adapter name: score of each weight entry} under ``cfg.mask_score``."""
        kind = self.cfg.mask_score
        if kind == "snip":
            bases = {name: a.base for name, a in self.adapters.items()}
            with autocast_context(self.model, self.autocast):
                return snip_scores(
                    self.model,
                    self.batches,
                    linears=bases,
                    desc=f"SNIP mask (step {step})",
                    weight_of=lambda name: self.adapters[name].effective_weight(),
                )
        if kind == "random":
            return random_scores({name: a.mask.shape for name, a in self.adapters.items()}, self.seed)
        if kind == "magnitude":
            with torch.no_grad():
                return magnitude_scores((name, a.effective_weight()) for name, a in self.adapters.items())
        raise ValueError(f"patch.mask_score={kind} is unknown. Allowed: {', '.join(MASK_SCORES)}")

    def allowed_entries(self) -> int:
        """Entries the patch may change under the current masks (rowcol: the rows x columns they span)."""
        total = 0
        for adapter in self.adapters.values():
            if adapter.mask_map == "rowcol":
                total += int(adapter.mask.any(1).sum()) * int(adapter.mask.any(0).sum())
            else:
                total += int(adapter.mask.sum())
        return total


def reference_logprobs(
    model, adapters, items: list[dict], batch_size: int, pad_id: int, autocast: torch.dtype | None = None
) -> torch.Tensor:
    """(n, 2) summed log-probs of chosen / rejected under the unpatched model (adapters off), in the
    policy's compute dtype (``autocast``), so that policy and reference agree before the first update."""
    out = []
    with adapters_disabled(adapters), torch.no_grad(), autocast_context(model, autocast):
        for i in tqdm(range(0, len(items), batch_size), desc="DPO reference (unpatched)", unit="batch"):
            chunk = items[i : i + batch_size]
            batch = collate([it["chosen"] for it in chunk] + [it["rejected"] for it in chunk], pad_id)
            out.append(_summed_logprobs(model, batch).view(2, len(chunk)).T.cpu())
    return torch.cat(out)


def train_patch(
    model,
    adapters: dict[str, MaskedLoRALinear],
    items: list[dict],
    cfg,
    pad_id: int,
    seed: int,
    log_step: Callable[[dict], None] | None = None,
) -> dict:
    """Train the adapters in place; returns facts (losses, steps, masks, parameter counts, seconds) and
    ``history``, one row per optimizer step (see ``_history_row``), each also handed to ``log_step``
    as soon as its step is done (live training curves)."""
    from transformers import get_cosine_schedule_with_warmup

    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"patch.objective={cfg.objective} is unknown. Allowed: {', '.join(OBJECTIVES)}")
    seed_everything(seed, deterministic=None)  # python, numpy, torch
    device = next(model.parameters()).device
    dtype = autocast_dtype(getattr(cfg, "autocast", None), device)
    selector = MaskSelector(model, adapters, items, cfg, pad_id, seed, autocast=dtype)
    if getattr(cfg, "gradient_checkpointing", False):
        # each layer's activations are recomputed in the backward pass instead of kept: memory for time
        # (SNIP's passes too, the first selection included)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    selector.select(step=0)
    initial_selection = selector.seconds
    ref = reference_logprobs(model, adapters, items, cfg.batch_size, pad_id, dtype) if cfg.objective == "dpo" else None
    params = [p for a in adapters.values() for p in a.trainables()]
    steps = cfg.epochs * math.ceil(len(items) / cfg.batch_size)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, int(cfg.warmup_fraction * steps)), steps)
    rng = random.Random(seed)
    losses, accuracies, margins, history, reselections, step, started = [], [], [], [], 0, 0, time.time()
    model.train()
    with tqdm(total=steps, desc=f"patch {cfg.name} ({cfg.objective}, tau={cfg.tau})", unit="step") as bar:
        for epoch in range(cfg.epochs):
            order = list(range(len(items)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                # tau = 1 has no mask to re-select: the baselines train one LoRA throughout
                reselected = bool(step and step % cfg.mask_every == 0 and cfg.tau < 1.0)
                if reselected:
                    for adapter in adapters.values():
                        adapter.fold_and_reset()
                    optimizer.state.clear()  # moments of the old factors mean nothing for the new ones
                    selector.select(step)
                    model.train()
                    reselections += 1
                idx = order[start : start + cfg.batch_size]
                lr = schedule.get_last_lr()[0]  # the rate this step's update uses
                dpo_facts = None
                if cfg.objective == "dpo":
                    batch = collate([items[i]["chosen"] for i in idx] + [items[i]["rejected"] for i in idx], pad_id)
                    with autocast_context(model, dtype):
                        policy = _summed_logprobs(model, batch).view(2, len(idx)).float()
                    reference = ref[idx].T.to(policy.device)
                    loss, dpo_facts = dpo_loss(policy[0], policy[1], reference[0], reference[1], cfg.beta)
                    # token-weighted NLL of the chosen responses (the SFT loss of the same batch); the
                    # log-probs cover the shifted targets, so count response tokens in labels[:, 1:]
                    tokens = int((batch["labels"][: len(idx), 1:] != -100).sum())
                    dpo_facts["chosen_nll"] = -policy[0].detach().sum().item() / max(tokens, 1)
                    accuracies.append(dpo_facts["reward_accuracy"])
                    margins.append(dpo_facts["margin"])
                else:
                    with autocast_context(model, dtype):
                        loss = response_loss(model, collate([items[i]["chosen"] for i in idx], pad_id)).float()
                losses.append(optimizer_step(loss, params, optimizer, schedule))
                history.append(_history_row(step, epoch, losses[-1], lr, dpo_facts, reselected))
                if log_step is not None:
                    log_step(history[-1])
                step += 1
                bar.set_postfix(epoch=epoch, loss=f"{sum(losses[-8:]) / len(losses[-8:]):.4f}")
                bar.update()
    model.eval()
    if getattr(cfg, "gradient_checkpointing", False):
        model.gradient_checkpointing_disable()
    tail = max(1, len(losses) // 5)
    facts = {
        "objective": cfg.objective,
        "mask_score": cfg.mask_score,
        "steps": steps,
        "epochs": cfg.epochs,
        "pairs": len(items),
        "loss_first_steps": _mean(losses[:tail]),
        "loss_last_steps": _mean(losses[-tail:]),
        "mask_selections": selector.selections,
        "mask_reselections": reselections,
        "snip_seconds": round(selector.seconds, 1),
        "trainable_params": sum(p.numel() for p in params),
        "updatable_entries": selector.allowed_entries(),  # under the last mask
        "weight_entries": sum(a.mask.numel() for a in adapters.values()),
        "train_seconds": round(time.time() - started - (selector.seconds - initial_selection), 1),
        **({"autocast": str(dtype).removeprefix("torch.")} if dtype is not None else {}),
    }
    if accuracies:
        facts["reward_accuracy_last_steps"] = _mean(accuracies[-tail:])
        facts["dpo_margin_last_steps"] = _significant(sum(margins[-tail:]) / len(margins[-tail:]))
    facts["history"] = history
    return facts


def _history_row(step: int, epoch: int, loss: float, lr: float, dpo_facts: dict | None, reselected: bool) -> dict:
    """One optimizer step: step (0-based), epoch, loss, lr; for dpo the mean beta-scaled margin, the
    reward accuracy and the chosen responses' per-token NLL (perplexity = exp); ``mask_reselected``
    only on steps whose mask was re-selected just before the update."""
    row = {"step": step, "epoch": epoch, "loss": _significant(loss), "lr": _significant(lr)}
    if dpo_facts is not None:
        row.update(
            dpo_margin=_significant(dpo_facts["margin"]),
            reward_accuracy=round(dpo_facts["reward_accuracy"], 4),
            chosen_nll=_significant(dpo_facts["chosen_nll"]),
        )
    if reselected:
        row["mask_reselected"] = True
    return row


def _significant(value: float, digits: int = 5) -> float:
    """``value`` to ``digits`` significant digits: compact, yet keeps lr ~1e-6 and beta-scaled margins."""
    return float(f"{value:.{digits}g}")


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)

"""Supervised fine-tuning on prompt/response pairs: tokenization with the chat template, length-
bucketed batches, a response-only loss and one training loop, shared by the align stage and the
fine-tuning quantizers (qlora, llm_qat)."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from qresafe_exp.lm import response_token_logprobs


def tokenize_example(
    tokenizer, ex: dict, max_length: int, max_response_tokens: int, system_prompt: str | None = None
) -> dict:
    """input_ids + labels with the prompt (template and system prompt included) masked out."""
    messages = [{"role": "user", "content": ex["prompt"]}]
    system = ex.get("system_prompt", system_prompt)
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(ex["response"], add_special_tokens=False)["input_ids"][:max_response_tokens]
    response_ids = response_ids + [tokenizer.eos_token_id]  # learn to stop
    if len(prompt_ids) + len(response_ids) > max_length:
        prompt_ids = prompt_ids[-(max_length - len(response_ids)) :]
    return {"input_ids": prompt_ids + response_ids, "labels": [-100] * len(prompt_ids) + response_ids}


def batches(items: list[dict], batch_size: int, pad_id: int, rng: random.Random):
    """Length-bucketed batches (less padding on CPU), in a random order of buckets."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        yield collate([items[i] for i in chunk], pad_id)


def collate(items: list[dict], pad_id: int) -> dict:
    """Right-padded input_ids / labels (-100 on padding) / attention_mask for tokenized examples."""
    width = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), width), pad_id)
    labels = torch.full((len(items), width), -100)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        ids[row, :n] = torch.tensor(item["input_ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def response_loss(causal_lm, batch: dict) -> torch.Tensor:
    """Mean next-token NLL over the response tokens only (see qresafe_exp.lm)."""
    device = next(causal_lm.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    logprobs, _ = response_token_logprobs(causal_lm, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return -logprobs.mean()


def optimizer_step(loss: torch.Tensor, params: list, optimizer, schedule) -> float:
    """Backward, clip the gradient norm to 1, step the optimizer and its schedule; returns the loss."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def train(
    causal_lm,
    params: Iterable[torch.nn.Parameter],
    items: list[dict],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    pad_id: int,
    seed: int,
    desc: str,
    warmup_fraction: float = 0.05,
    ascent: bool = False,
    autocast: torch.dtype | None = None,
    max_steps: int | None = None,
    stop_above_nll: float | None = None,
    set_nll: Callable[[], float] | None = None,
    log_step: Callable[[dict], None] | None = None,
) -> dict:
    """AdamW + cosine schedule + grad clipping over ``epochs`` passes; returns loss facts (the response
    NLL). ``ascent``: gradient ascent on that NLL (unlearning the responses). ``autocast``: run the
    forward pass in that dtype (weights and optimizer state stay fp32). ``max_steps`` caps the optimizer
    steps (the schedule is laid over the capped count); ``stop_above_nll`` ends training before the
    first update whose batch NLL already exceeds it (a bound for gradient ascent, which otherwise
    drives the NLL up without limit); with ``set_nll`` (the model's NLL on the whole training set) the
    bound is held on that instead: measured after each update, and the update that crosses it is undone,
    so the result is the last model within the bound (one batch's NLL varies by a nat or more, so the
    batch rule stops at a step that depends on the batch order). ``log_step`` gets {step, epoch, loss,
    lr[, set_nll]} after each update."""
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in params if p.requires_grad]
    steps = epochs * math.ceil(len(items) / batch_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, int(warmup_fraction * steps)), steps)
    rng = random.Random(seed)
    losses, stopped, started = [], None, time.time()
    by_set = stop_above_nll is not None and set_nll is not None
    by_batch = stop_above_nll is not None and set_nll is None
    before = [torch.empty_like(p) for p in params] if by_set else []  # each update's starting point, to undo it
    sign = -1.0 if ascent else 1.0
    causal_lm.train()
    with tqdm(total=steps, desc=desc, unit="step") as bar:
        for epoch in range(epochs):
            for batch in batches(items, batch_size, pad_id, rng):
                if len(losses) >= steps:
                    break
                with autocast_context(causal_lm, autocast):
                    loss = response_loss(causal_lm, batch)
                if by_batch and loss.item() > stop_above_nll:
                    optimizer.zero_grad(set_to_none=True)
                    stopped = {"step": len(losses), "batch_nll": round(loss.item(), 4), "bound": stop_above_nll}
                    break
                lr = schedule.get_last_lr()[0]  # the rate this step's update uses
                if by_set:
                    for saved, p in zip(before, params):
                        saved.copy_(p.detach())
                step_loss = sign * optimizer_step(sign * loss.float(), params, optimizer, schedule)
                row = {"step": len(losses), "epoch": epoch, "loss": round(step_loss, 6), "lr": lr}
                if by_set:
                    causal_lm.eval()
                    row["set_nll"] = set_nll()
                    causal_lm.train()
                    if row["set_nll"] > stop_above_nll:  # undo the crossing update: the model stays in bounds
                        with torch.no_grad():
                            for saved, p in zip(before, params):
                                p.copy_(saved)
                        stopped = {"step": len(losses), "set_nll": row["set_nll"], "bound": stop_above_nll}
                        break
                losses.append(step_loss)
                if log_step is not None:
                    log_step(row)
                bar.set_postfix(epoch=epoch, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
                bar.update()
            if stopped is not None or len(losses) >= steps:
                break
    causal_lm.eval()
    if not losses:
        found = stopped.get("batch_nll", stopped.get("set_nll"))
        where = "the first batch's response NLL" if by_batch else "the set's response NLL after the first update"
        raise ValueError(
            f"{desc}: {where} {found} is already above the bound {stop_above_nll}; raise the bound "
            "above the model's NLL on this data, or lower the learning rate"
        )
    tail = max(1, len(losses) // 10)
    bounded = (
        {}
        if max_steps is None and stop_above_nll is None
        else {
            "steps_run": len(losses),
            "max_steps": max_steps,
            "stop_above_nll": stop_above_nll,
            **({"stop_on": "set"} if by_set else {}),
            "stopped_by_nll": stopped,
        }
    )
    return {
        "steps": steps,
        **bounded,
        "epochs": epochs,
        "examples": len(items),
        "trainable_params": sum(p.numel() for p in params),
        "loss_first_steps": _mean(losses[:tail]),
        "loss_last_steps": _mean(losses[-tail:]),
        "train_seconds": round(time.time() - started, 1),
        **({"autocast": str(autocast).removeprefix("torch.")} if autocast is not None else {}),
    }


def autocast_context(causal_lm, dtype: torch.dtype | None):
    """Forward passes in ``dtype`` on the model's device (None: no autocast, the weights' own dtype)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(next(causal_lm.parameters()).device.type, dtype=dtype)

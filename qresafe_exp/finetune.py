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
    log_step: Callable[[dict], None] | None = None,
) -> dict:
    """AdamW + cosine schedule + grad clipping over ``epochs`` passes; returns loss facts (the response
    NLL). ``ascent``: gradient ascent on that NLL (unlearning the responses). ``autocast``: run the
    forward pass in that dtype (weights and optimizer state stay fp32). ``max_steps`` caps the optimizer
    steps (the schedule is laid over the capped count); ``stop_above_nll`` ends training before the
    first update whose batch NLL already exceeds it (a bound for gradient ascent, which otherwise
    drives the NLL up without limit). ``log_step`` gets {step, epoch, loss, lr} after each update."""
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in params if p.requires_grad]
    steps = epochs * math.ceil(len(items) / batch_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, int(warmup_fraction * steps)), steps)
    rng = random.Random(seed)
    losses, stopped, started = [], None, time.time()
    sign = -1.0 if ascent else 1.0
    causal_lm.train()
    with tqdm(total=steps, desc=desc, unit="step") as bar:
        for epoch in range(epochs):
            for batch in batches(items, batch_size, pad_id, rng):
                if len(losses) >= steps:
                    break
                with autocast_context(causal_lm, autocast):
                    loss = response_loss(causal_lm, batch)
                if stop_above_nll is not None and loss.item() > stop_above_nll:
                    optimizer.zero_grad(set_to_none=True)
                    stopped = {"step": len(losses), "batch_nll": round(loss.item(), 4), "bound": stop_above_nll}
                    break
                lr = schedule.get_last_lr()[0]  # the rate this step's update uses
                losses.append(sign * optimizer_step(sign * loss.float(), params, optimizer, schedule))
                if log_step is not None:
                    log_step({"step": len(losses) - 1, "epoch": epoch, "loss": round(losses[-1], 6), "lr": lr})
                bar.set_postfix(epoch=epoch, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
                bar.update()
            if stopped is not None or len(losses) >= steps:
                break
    causal_lm.eval()
    if not losses:
        raise ValueError(
            f"{desc}: the first batch's response NLL {stopped['batch_nll']} is already above the "
            f"bound {stop_above_nll}; raise the bound above the model's NLL on this data"
        )
    tail = max(1, len(losses) // 10)
    bounded = (
        {}
        if max_steps is None and stop_above_nll is None
        else {
            "steps_run": len(losses),
            "max_steps": max_steps,
            "stop_above_nll": stop_above_nll,
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

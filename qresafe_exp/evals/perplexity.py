"""Perplexity of each response under the FP model: the degeneration guard's fluency signal.

Gibberish from a broken low-bit model is made of real tokens and real letters, so a character or
repetition rule misses it; the FP model, conditioned on the same rendered prompt, finds it wildly
improbable. One forward pass per response (no generation), cached per request.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from qresafe_exp.cache import RequestCache, content_key
from qresafe_exp.lm import response_token_logprobs


@torch.inference_mode()
def response_perplexities(
    model, tokenizer, texts: list[str], responses: list[str], batch_size: int = 16, desc: str = "fp perplexity"
) -> list[float | None]:
    """exp(mean NLL of the response tokens | rendered prompt); None for an empty response."""
    results: list[float | None] = [None] * len(texts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = {
        i: tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i, r in enumerate(responses) if r.strip()
    }
    answers = {i: tokenizer(responses[i], add_special_tokens=False)["input_ids"] for i in prompts}
    todo = sorted(prompts, key=lambda i: len(prompts[i]) + len(answers[i]))  # little padding per batch
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch"):
        idx = todo[start : start + batch_size]
        width = max(len(prompts[i]) + len(answers[i]) for i in idx)
        ids = torch.full((len(idx), width), pad)
        labels = torch.full((len(idx), width), -100)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = prompts[i] + answers[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(prompts[i]) : len(seq)] = torch.tensor(answers[i])
            mask[row, : len(seq)] = 1
        device = model.device
        logprobs, rows = response_token_logprobs(model, ids.to(device), mask.to(device), labels.to(device))
        nll = -torch.zeros(len(idx), device=device).index_add(0, rows, logprobs)
        counts = torch.zeros(len(idx), device=device).index_add(0, rows, torch.ones_like(logprobs)).clamp(min=1)
        for row, i in enumerate(idx):
            results[i] = round(math.exp(min((nll[row] / counts[row]).item(), 50.0)), 3)
    return results


def cached_perplexities(
    model_factory,
    tokenizer,
    scorer_key: str,
    texts: list[str],
    responses: list[str],
    cache: RequestCache,
    batch_size: int,
    desc: str,
) -> list[float | None]:
    keys = [content_key(t, r, length=32) for t, r in zip(texts, responses)]
    return cache.fill(
        f"fp_perplexity/{scorer_key}",
        keys,
        lambda missing: response_perplexities(
            model_factory(), tokenizer, [texts[i] for i in missing], [responses[i] for i in missing], batch_size, desc
        ),
    )

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


@torch.inference_mode()
def response_perplexities(model, tokenizer, texts: list[str], responses: list[str], batch_size: int = 16,
                          desc: str = "fp perplexity") -> list[float | None]:
    """exp(mean NLL of the response tokens | rendered prompt); None for an empty response."""
    results: list[float | None] = [None] * len(texts)
    todo = [i for i, r in enumerate(responses) if r.strip()]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch"):
        idx = todo[start : start + batch_size]
        prompts = [tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in idx]
        answers = [tokenizer(responses[i], add_special_tokens=False)["input_ids"] for i in idx]
        width = max(len(p) + len(a) for p, a in zip(prompts, answers))
        ids = torch.full((len(idx), width), pad)
        labels = torch.full((len(idx), width), -100)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, (p, a) in enumerate(zip(prompts, answers)):
            seq = p + a
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(p) : len(seq)] = torch.tensor(a)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        target = labels[:, 1:].to(model.device)
        picked = logprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        valid = target != -100
        nll = -(picked * valid).sum(1) / valid.sum(1).clamp(min=1)
        for row, i in enumerate(idx):
            results[i] = round(math.exp(min(nll[row].item(), 50.0)), 3)
    return results


def cached_perplexities(model_factory, tokenizer, scorer_key: str, texts: list[str], responses: list[str],
                        cache: RequestCache, batch_size: int, desc: str) -> list[float | None]:
    ns = f"fp_perplexity/{scorer_key}"
    keys = [content_key(t, r, length=32) for t, r in zip(texts, responses)]
    found = cache.get_many(ns, keys)
    missing = [i for i, k in enumerate(keys) if k not in found]
    if missing:
        values = response_perplexities(model_factory(), tokenizer, [texts[i] for i in missing],
                                       [responses[i] for i in missing], batch_size, desc)
        new = {keys[i]: v for i, v in zip(missing, values)}
        cache.put_many(ns, new)
        found.update(new)
    return [found[k] for k in keys]

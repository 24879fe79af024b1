"""Batched greedy generation with the HF engine, cached per request.

Prompts are rendered with the model's own chat template, sorted by token length and generated in
batches with left padding (so similar lengths share a batch and little compute goes to padding).
Each finished batch is written to the request cache at once: a killed run resumes from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm.auto import tqdm

from qresafe_exp.cache import RequestCache, content_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSpec:
    max_new_tokens: int
    system_prompt: Optional[str] = None  # None = the chat template's default
    do_sample: bool = False  # greedy unless sampling is asked for (decoding attack, MT-Bench writing)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    seed: int = 0

    def as_dict(self) -> dict:
        """The request-cache key part (greedy keys carry no sampling fields, so they never change)."""
        base = {"max_new_tokens": self.max_new_tokens, "system_prompt": self.system_prompt,
                "do_sample": self.do_sample}
        if self.do_sample:
            base.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed)
        return base

    def sampling_kwargs(self) -> dict:
        if not self.do_sample:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


def render_chat(tokenizer, user_prompt: str, system_prompt: Optional[str], history: tuple = ()) -> str:
    """The chat-template text ending in the assistant's turn; ``history`` = earlier (user, assistant) turns."""
    messages = [m for user, assistant in history
                for m in ({"role": "user", "content": user}, {"role": "assistant", "content": assistant})]
    messages.append({"role": "user", "content": user_prompt})
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class HFEngine:
    def __init__(self, model, tokenizer, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @torch.inference_mode()
    def generate(self, texts: list[str], spec: GenerationSpec, on_batch=None, desc: str = "generate") -> list[str]:
        """Generate for already-rendered ``texts``; ``on_batch(indices, outputs)`` after each batch."""
        tok = self.tokenizer
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        outputs: list[Optional[str]] = [None] * len(texts)
        device = self.model.device
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc, unit="batch"):
            idx = order[start : start + self.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            if spec.do_sample:  # a seed per batch: the same batch of prompts samples the same answers
                torch.manual_seed(spec.seed + start)
            out = self.model.generate(
                **enc, max_new_tokens=spec.max_new_tokens, **spec.sampling_kwargs(),
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )
            decoded = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True,
                                       clean_up_tokenization_spaces=False)
            for i, text in zip(idx, decoded):
                outputs[i] = text.strip()
            if on_batch is not None:
                on_batch(idx, [outputs[i] for i in idx])
        return outputs  # type: ignore[return-value]


def generate_cached(engine_factory, model_key: str, texts: list[str], spec: GenerationSpec,
                    cache: RequestCache, desc: str = "generate") -> tuple[list[str], int]:
    """Responses for ``texts``, generating only the ones missing from ``cache``.

    ``engine_factory()`` is called only if something is missing, so a warm run never loads a model.
    Returns (responses, number generated now).
    """
    ns = f"generation/{model_key}"
    keys = [content_key(text, spec.as_dict(), length=32) for text in texts]
    found = cache.get_many(ns, keys)
    missing = [i for i, k in enumerate(keys) if k not in found]
    log.info("%s: %d/%d responses cached, %d to generate", desc, len(texts) - len(missing), len(texts), len(missing))
    if missing:
        engine = engine_factory()

        def save(batch_idx, batch_out):
            cache.put_many(ns, {keys[missing[i]]: o for i, o in zip(batch_idx, batch_out)})

        generated = engine.generate([texts[i] for i in missing], spec, on_batch=save, desc=desc)
        for i, response in zip(missing, generated):
            found[keys[i]] = response
    return [found[k] for k in keys], len(missing)

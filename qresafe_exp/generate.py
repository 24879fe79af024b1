"""Generation requests, chat rendering and the request cache in front of the engines.

Prompts are rendered with the model's own chat template; an engine (qresafe_exp.engines) generates
only the responses the request cache lacks, and each finished batch is written to the cache at
once: a killed run resumes from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from qresafe_exp.cache import RequestCache, content_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSpec:
    max_new_tokens: int
    system_prompt: str | None = None  # None = the chat template's default
    do_sample: bool = False  # greedy unless sampling is asked for (decoding attack, MT-Bench writing)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    seed: int = 0

    def as_dict(self) -> dict:
        """The request-cache key part (greedy keys carry no sampling fields, so they never change)."""
        base = {"max_new_tokens": self.max_new_tokens, "system_prompt": self.system_prompt, "do_sample": self.do_sample}
        if self.do_sample:
            base.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed)
        return base

    def sampling_kwargs(self) -> dict:
        if not self.do_sample:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends a response: the model's ``generation_config.eos_token_id`` (an int or a list,
    e.g. Gemma's ``<end_of_turn>`` beside ``<eos>``) and the tokenizer's eos: the transformers and vLLM
    engines stop on the same set."""
    ids: list[int] = []
    for eos in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for token in eos if isinstance(eos, (list, tuple)) else [eos]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    return ids


def render_chat(tokenizer, user_prompt: str, system_prompt: str | None, history: tuple = ()) -> str:
    """The chat-template text ending in the assistant's turn; ``history`` = earlier (user, assistant) turns."""
    messages = [
        m
        for user, assistant in history
        for m in ({"role": "user", "content": user}, {"role": "assistant", "content": assistant})
    ]
    messages.append({"role": "user", "content": user_prompt})
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def generate_cached(
    engine_factory, model_key: str, texts: list[str], spec: GenerationSpec, cache: RequestCache, desc: str = "generate"
) -> tuple[list[str], int]:
    """Responses for ``texts``, generating only the ones missing from ``cache``.

    ``engine_factory()`` is called only if something is missing, so a warm run never loads a model;
    its ``cache_tag(spec)`` (when it has one) keeps outputs of different engines apart.
    Returns (responses, number generated now).
    """
    ns = f"generation/{model_key}"
    request = spec.as_dict()
    tag = engine_factory.cache_tag(spec) if hasattr(engine_factory, "cache_tag") else None
    if tag is not None:
        request["engine"] = tag
    keys = [content_key(text, request, length=32) for text in texts]
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

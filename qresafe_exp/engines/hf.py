"""The transformers engine: batched generation with a decode loop that drops finished sequences.

Prompts are sorted by token length (similar lengths share a batch, little compute goes to padding)
and generated ``batch_size`` at a time with left padding. ``decode=compact`` (the default) runs its
own loop over a dynamic KV cache: after each step the rows that emitted EOS are removed from the
batch and from the cache, so a refusal that ends after 20 tokens stops costing compute while its
neighbours write 128. Its decode steps neither repeat grouped KV heads nor re-concatenate the cache
(engines/decode_kernels.py). ``decode=generate`` hands the batch to ``model.generate`` instead, which is
where transformers' static KV cache and torch.compile live (GPU options).
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from qresafe_exp.engines.decode_kernels import gqa_decode, reserved_cache
from qresafe_exp.generate import stop_token_ids

log = logging.getLogger(__name__)
DECODE_MODES = ("compact", "generate")


def check_decode(decode: str, cache_implementation: str | None, compile: bool) -> None:
    if decode not in DECODE_MODES:
        raise ValueError(f"engine.decode={decode} is unknown. Allowed: {', '.join(DECODE_MODES)}")
    if decode == "compact" and (cache_implementation or compile):
        raise ValueError(
            "engine.cache_implementation / engine.compile apply to transformers' generate: "
            "set engine.decode=generate to use them"
        )


class HFEngine:
    name = "hf"

    @classmethod
    def check(cls, engine_cfg, device) -> None:
        from qresafe_exp.devices import engine_dtype

        engine_dtype(engine_cfg.get("dtype"), device)
        check_decode(engine_cfg.decode, engine_cfg.cache_implementation, engine_cfg.compile)

    @classmethod
    def cache_tag(cls, engine_cfg, spec, dtype) -> str | None:
        tag = "hf-compact" if spec.do_sample and engine_cfg.decode == "compact" else None
        if dtype is not None:
            tag = f"{tag or 'hf'}-{str(dtype).removeprefix('torch.')}"
        return tag

    @classmethod
    def from_factory(cls, factory) -> HFEngine:
        model = (
            factory.load_model(factory.path, factory.device)
            if factory.dtype is None
            else factory.load_model(factory.path, factory.device, dtype=factory.dtype)
        )
        return cls(
            model,
            factory.tokenizer,
            batch_size=factory.cfg.batch_size,
            decode=factory.cfg.decode,
            cache_implementation=factory.cfg.cache_implementation,
            compile=factory.cfg.compile,
        )

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 32,
        decode: str = "compact",
        cache_implementation: str | None = None,
        compile: bool = False,
    ):
        check_decode(decode, cache_implementation, compile)
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.decode, self.cache_implementation, self.compile = decode, cache_implementation, compile
        self.stats = {"forward_rows": 0}  # rows through the model: what dropping finished sequences saves

    @torch.inference_mode()
    def generate(self, texts: list[str], spec, on_batch=None, desc: str = "generate") -> list[str]:
        """Generate for already-rendered ``texts``; ``on_batch(indices, outputs)`` after each batch."""
        tok = self.tokenizer
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        outputs: list[str | None] = [None] * len(texts)
        device = self.model.device
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc, unit="batch"):
            idx = order[start : start + self.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            generator = None
            if spec.do_sample:  # a seed per batch: the same batch of prompts samples the same answers
                generator = torch.Generator(device=device).manual_seed(spec.seed + start)
            if self.decode == "compact":
                token_lists = self._compact_decode(enc, spec, generator)
            else:
                token_lists = self._hf_generate(enc, spec, generator)
            decoded = tok.batch_decode(token_lists, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for i, text in zip(idx, decoded):
                outputs[i] = text.strip()
            if on_batch is not None:
                on_batch(idx, [outputs[i] for i in idx])
        return outputs  # type: ignore[return-value]

    def _stop_ids(self) -> torch.Tensor:
        ids = stop_token_ids(self.tokenizer, getattr(self.model, "generation_config", None))
        return torch.tensor(ids, dtype=torch.long, device=self.model.device)

    def _compact_decode(self, enc, spec, generator) -> list[list[int]]:
        with gqa_decode(self.model):  # decode steps read the KV cache in place (engines/decode_kernels.py)
            return self._compact_loop(enc, spec, generator)

    def _compact_loop(self, enc, spec, generator) -> list[list[int]]:
        model, stop_ids = self.model, self._stop_ids()
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = reserved_cache(model.config, reserve=spec.max_new_tokens)
        logits = model(
            input_ids=enc["input_ids"],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        self.stats["forward_rows"] += int(mask.shape[0])
        warp = _warpers(spec)
        rows = torch.arange(mask.shape[0], device=mask.device)  # batch row of each still-active sequence
        next_pos = positions[:, -1] + 1
        tokens_out: list[list[int]] = [[] for _ in range(mask.shape[0])]
        for step in range(spec.max_new_tokens):
            tokens = _pick(logits, warp, generator)
            for row, token in zip(rows.tolist(), tokens.tolist()):
                tokens_out[row].append(token)
            active = ~torch.isin(tokens, stop_ids)
            if step + 1 == spec.max_new_tokens or not bool(active.any()):
                break
            if not bool(active.all()):  # drop finished sequences from the batch and the KV cache
                keep = active.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                mask, rows, tokens, next_pos = mask[keep], rows[keep], tokens[keep], next_pos[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            logits = model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :]
            self.stats["forward_rows"] += int(mask.shape[0])
            next_pos = next_pos + 1
        stop = set(stop_ids.tolist())
        return [t[:-1] if t and t[-1] in stop else t for t in tokens_out]

    def _hf_generate(self, enc, spec, generator) -> list[list[int]]:
        if generator is not None:  # generate() draws from the global generator
            torch.manual_seed(int(generator.initial_seed()))
        extra = {}
        if self.cache_implementation:
            extra["cache_implementation"] = self.cache_implementation
        if self.compile:
            from transformers import CompileConfig

            extra["compile_config"] = CompileConfig(fullgraph=False)
        stop = self._stop_ids().tolist()
        out = self.model.generate(
            **enc,
            max_new_tokens=spec.max_new_tokens,
            **spec.sampling_kwargs(),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=stop or None,
            **extra,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        stop = set(stop)
        lists = []
        for row in new.tolist():
            cut = next((j for j, t in enumerate(row) if t in stop), len(row))
            lists.append(row[:cut])
        self.stats["forward_rows"] += int(new.shape[0]) * (int(new.shape[1]) + 1)
        return lists


def _warpers(spec) -> LogitsProcessorList:
    warp = LogitsProcessorList()
    if spec.do_sample:
        if spec.temperature != 1.0:
            warp.append(TemperatureLogitsWarper(spec.temperature))
        if spec.top_k:
            warp.append(TopKLogitsWarper(spec.top_k))
        if spec.top_p < 1.0:
            warp.append(TopPLogitsWarper(spec.top_p))
    return warp


def _pick(logits: torch.Tensor, warp: LogitsProcessorList, generator) -> torch.Tensor:
    if generator is None:
        return logits.argmax(-1)
    scores = warp(None, logits.float())
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)

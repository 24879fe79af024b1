"""Decode steps that do not copy the KV cache (the compact loop's CPU fast path).

Besides reading the weights, two copies dominate a batched decode step's memory traffic, both
proportional to batch x context x layers, every generated token:
- transformers' SDPA path repeats each cached key/value head to the number of query heads whenever a
  padding mask is present (a left-padded batch always has one), because CUDA's fused kernels cannot
  take grouped-query attention with a mask. SmolLM2-135M has 3 KV heads for 9 query heads, so that is
  3x the cache, copied per layer per step. On CPU, torch's SDPA takes ``enable_gqa`` with a mask and
  gives bitwise the same output (tests/unit/test_decode_kernels.py).
- ``DynamicCache`` appends a token by concatenating the whole cache into a new tensor. ``ReservedLayer``
  writes into a buffer sized for the prompt plus ``max_new_tokens`` and hands attention a view of it.

Both change where the numbers live, not which numbers are computed: greedy outputs are unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

GQA_DECODE = "qresafe_sdpa_gqa_decode"


def gqa_decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """SDPA for one new token per row with grouped-query heads left grouped; anything else (prefill,
    CUDA, dropout, a position bias) goes to transformers' own SDPA function unchanged."""
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    plain = query.shape[2] != 1 or query.device.type != "cpu" or dropout or kwargs.get("position_bias") is not None
    if not grouped or plain or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_DECODE, gqa_decode_attention)
AttentionMaskInterface.register(GQA_DECODE, sdpa_mask)  # the same masks as "sdpa"


@contextmanager
def gqa_decode(model):
    """Route a model that uses "sdpa" through ``gqa_decode_attention`` for the duration."""
    config = model.config
    before = config._attn_implementation
    if before != "sdpa":
        yield
        return
    config._attn_implementation = GQA_DECODE
    try:
        yield
    finally:
        config._attn_implementation = before


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in a buffer with room for ``reserve`` more tokens than
    the prompt: a decode step writes one slot instead of copying the cache. Grows (copying once) if a
    caller goes past the reserve; dropping finished rows copies the buffer once, as DynamicLayer does."""

    def __init__(self, reserve: int):
        super().__init__()
        self.reserve = reserve
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._length = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            self._keys, self._values = (
                self._grown(self._keys, key_states, end),
                self._grown(self._values, value_states, end),
            )
        self._keys[..., self._length : end, :].copy_(key_states)
        self._values[..., self._length : end, :].copy_(value_states)
        self._length = end
        self._expose()
        return self.keys, self.values

    def _grown(self, old: torch.Tensor | None, like: torch.Tensor, needed: int) -> torch.Tensor:
        buffer = like.new_empty(*like.shape[:-2], needed + self.reserve, like.shape[-1])
        if old is not None and self._length:
            buffer[..., : self._length, :].copy_(old[..., : self._length, :])
        return buffer

    def _expose(self) -> None:
        self.keys = self._keys[..., : self._length, :]
        self.values = self._values[..., : self._length, :]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._length:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("ReservedLayer serves the compact decode loop only (no cropping)")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("ReservedLayer serves the compact decode loop only (no beam search)")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("ReservedLayer serves the compact decode loop only (no beam search)")


def reserved_cache(config, reserve: int) -> DynamicCache:
    """The model's DynamicCache with every plain full-attention layer reserved for ``reserve`` tokens
    (sliding-window and other special layers are kept as transformers builds them)."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache

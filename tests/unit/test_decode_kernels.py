"""The compact loop's decode kernels change where the KV cache lives, not what is computed: bitwise the
same logits as transformers' DynamicCache + SDPA path, step by step, with rows leaving the batch."""

from contextlib import nullcontext

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from qresafe_exp.engines.decode_kernels import GQA_DECODE, ReservedLayer, gqa_decode, reserved_cache


def _model(kv_heads: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=kv_heads,
        initializer_range=0.3,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


@torch.inference_mode()
def _steps(model, cache, kernels: bool, steps: int = 6, drop_at: int = 3) -> list[torch.Tensor]:
    """Greedy decode of a left-padded batch; two rows leave at ``drop_at``; the logits of every step."""
    ids = torch.randint(1, 64, (5, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = mask[3, :1] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step = lambda **kw: model(past_key_values=cache, use_cache=True, **kw).logits[:, -1, :]  # noqa: E731
    out = []
    with gqa_decode(model) if kernels else nullcontext():
        logits = step(input_ids=ids, attention_mask=mask, position_ids=positions)
        next_pos = positions[:, -1] + 1
        for i in range(steps):
            out.append(logits)
            tokens = logits.argmax(-1)
            if i == drop_at:
                keep = torch.tensor([0, 1, 4])
                cache.batch_select_indices(keep)
                mask, tokens, next_pos = mask[keep], tokens[keep], next_pos[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            logits = step(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None])
            next_pos = next_pos + 1
    return out


def test_reserved_cache_and_grouped_decode_attention_are_bitwise_transformers(monkeypatch):
    sdpa, grouped = torch.nn.functional.scaled_dot_product_attention, []

    def spy(*args, **kwargs):
        grouped.append(kwargs.get("enable_gqa", False))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    for kv_heads in (2, 6):  # grouped-query and plain multi-head attention
        model = _model(kv_heads)
        ref = _steps(model, DynamicCache(config=model.config), kernels=False)
        grouped.clear()
        cache = reserved_cache(model.config, reserve=3)  # fewer slots than steps: the buffer grows once
        got = _steps(model, cache, kernels=True)
        # the prefill through transformers' SDPA; each decode step of each layer grouped where heads are
        assert sum(grouped) == (2 * 6 if kv_heads < 6 else 0) and len(grouped) == 2 * 7
        assert all(isinstance(layer, ReservedLayer) for layer in cache.layers)
        assert len(got) == len(ref) == 6
        for a, b in zip(got, ref):
            assert torch.equal(a, b)
        assert model.config._attn_implementation == "sdpa"  # restored after the context


def test_reserved_layer_writes_in_place_after_the_prefill():
    layer = ReservedLayer(reserve=4)
    k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    keys, _ = layer.update(k, v)
    buffer = layer._keys
    assert buffer.shape[-2] == 9 and torch.equal(keys, k)
    for _ in range(4):  # within the reserve: the same buffer, a longer view
        keys, values = layer.update(torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8))
        assert layer._keys is buffer and keys.data_ptr() == buffer.data_ptr()
    assert layer.get_seq_length() == 9 and torch.equal(keys[..., :5, :], k)
    layer.update(torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8))  # past the reserve: grows, keeps the past
    assert layer.get_seq_length() == 10 and torch.equal(layer.keys[..., :5, :], k)
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape == (1, 3, 10, 8) and torch.equal(layer.keys[0, :, :5], k[1])


def test_other_attention_implementations_are_left_alone():
    model = _model(2)
    model.config._attn_implementation = "eager"
    with gqa_decode(model):
        assert model.config._attn_implementation == "eager"
    model.config._attn_implementation = "sdpa"
    with gqa_decode(model):
        assert model.config._attn_implementation == GQA_DECODE

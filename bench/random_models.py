"""Random models of a real model's shape, for machines without its weights (a lent GPU): the same
compute per token as the real model, not the same text."""

from __future__ import annotations

from pathlib import Path

import torch

SMOLLM2_SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rope_theta=100000.0,
)


def save_random_smollm2(tokenizer_dir: str | Path, out: str | Path, **token_ids) -> Path:
    """A seeded random Llama of SmolLM2-135M's shape with ``tokenizer_dir``'s tokenizer, saved to ``out``.
    Special-token ids default to the tokenizer's; ``token_ids`` (bos_token_id=...) override them."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        **token_ids,
    }
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), **ids, **SMOLLM2_SHAPE))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)

"""A transformers Llama checkpoint -> one GGUF file (f32 or f16) that llama.cpp loads, written with gguf-py.

Our own converter (llama.cpp's convert_hf_to_gguf.py is not installed here): hyper-parameters from
config.json, tensors renamed by gguf-py's TensorNameMap, the tokenizer from tokenizer.json (BPE tokens,
merges, token types, special ids, chat template, pre-tokenizer name). Two layouts differ between the two
programs: transformers rotates q/k with "rotate half" (the two halves of each head are the pairs), llama.cpp
with interleaved pairs, so the q_proj / k_proj rows are permuted per head on the way in (``_interleave``).
A tied lm_head is not written: llama.cpp reuses token_embd when output.weight is absent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
CONVERTER_VERSION = 1  # bump when the written file changes for the same checkpoint
DTYPES = ("f32", "f16")

# tokenizer.json's pre-tokenizer (as canonical JSON) -> llama.cpp's pre-tokenizer name. llama.cpp picks its
# split regex by this name; a structure not listed here is refused rather than guessed.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
PRE_TOKENIZERS = {
    # SmolLM2's tokenizer as transformers rebuilds it from the packaged GGUF (every model here); llama.cpp's
    # tokenization of it matches transformers' (tests/unit/test_llamacpp.py)
    json.dumps(_BYTE_LEVEL, sort_keys=True): "gpt-2",
}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _interleave(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of each head from [first halves; second halves] (transformers) to pairs side by side (llama.cpp)."""
    out_features, in_features = weight.shape
    head_dim = out_features // n_heads
    return weight.reshape(n_heads, 2, head_dim // 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def _state_dict(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{src}: no *.safetensors weights to convert to GGUF")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_file(shard))
    return tensors


def _hparams(config: dict) -> dict:
    if config.get("model_type") != "llama":
        raise ValueError(
            f"GGUF conversion handles Llama checkpoints; this one is model_type="
            f"{config.get('model_type')!r} (config.json)"
        )
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", "default"))
    if rope_type != "default":
        raise ValueError(f"GGUF conversion handles plain RoPE; this checkpoint has rope_type={rope_type!r}")
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return {
        "n_layers": config["num_hidden_layers"],
        "n_ctx": config["max_position_embeddings"],
        "hidden": config["hidden_size"],
        "ffn": config["intermediate_size"],
        "heads": heads,
        "kv_heads": config.get("num_key_value_heads") or heads,
        "head_dim": head_dim,
        "rope_theta": float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        "eps": float(config["rms_norm_eps"]),
        "vocab": config["vocab_size"],
        "tied": bool(config.get("tie_word_embeddings", False)),
    }


def tokenizer_fields(src: Path, config: dict) -> dict:
    """The GGUF tokenizer.* values of the checkpoint's tokenizer.json (a byte-level BPE tokenizer)."""
    tok = _read_json(src / "tokenizer.json")
    model = tok.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(
            f"{src}/tokenizer.json: GGUF conversion handles byte-level BPE tokenizers; this one is "
            f"{model.get('type')!r}"
        )
    pre = PRE_TOKENIZERS.get(json.dumps(tok.get("pre_tokenizer"), sort_keys=True))
    if pre is None:
        raise ValueError(
            f"{src}/tokenizer.json: pre-tokenizer {tok.get('pre_tokenizer')} has no llama.cpp name "
            "here; add it to PRE_TOKENIZERS in qresafe_exp/llamacpp/convert.py"
        )
    vocab = dict(model["vocab"])
    added = {t["content"]: t for t in tok.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    n = max(config["vocab_size"], max(vocab.values()) + 1)
    tokens, types = [f"[PAD{i}]" for i in range(n)], [5] * n  # 5 = UNUSED: ids the vocab leaves empty
    for content, i in vocab.items():
        tokens[i] = content
        # 3 = CONTROL (special added tokens), 4 = USER_DEFINED (other added tokens), 1 = NORMAL
        types[i] = (3 if added[content].get("special") else 4) if content in added else 1
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    tok_cfg = _read_json(src / "tokenizer_config.json")
    gen = _read_json(src / "generation_config.json")
    template = tok_cfg.get("chat_template")
    if template is None and (src / "chat_template.jinja").exists():
        template = (src / "chat_template.jinja").read_text()

    def special(name: str):
        """The model's own id (generation_config, config.json) before the tokenizer's: what generation stops on."""
        for source in (gen, config, tok_cfg):
            value = source.get(f"{name}_token_id")
            if isinstance(value, list):
                value = value[0] if value else None
            if value is not None:
                return int(value)
        content = tok_cfg.get(f"{name}_token")
        content = content.get("content") if isinstance(content, dict) else content
        return vocab.get(content) if content is not None else None

    return {
        "pre": pre,
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "template": template,
        "ids": {name: special(name) for name in ("bos", "eos", "unk", "pad")},
        "add_bos": bool(tok_cfg.get("add_bos_token", False)),
    }


def convert(src: str | Path, out: str | Path, dtype: str = "f32") -> dict:
    """Write ``src`` (a transformers Llama checkpoint directory) as the GGUF file ``out``; returns facts."""
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"GGUF conversion dtype={dtype} is unknown. Allowed: {', '.join(DTYPES)}")
    src, out = Path(src), Path(out)
    config = _read_json(src / "config.json")
    hp = _hparams(config)
    tok = tokenizer_fields(src, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp["n_layers"])
    writer = gguf.GGUFWriter(out, arch="llama")
    writer.add_name(config.get("_model_name_or_path") or config.get("_name_or_path") or src.name)
    writer.add_context_length(hp["n_ctx"])
    writer.add_embedding_length(hp["hidden"])
    writer.add_block_count(hp["n_layers"])
    writer.add_feed_forward_length(hp["ffn"])
    writer.add_head_count(hp["heads"])
    writer.add_head_count_kv(hp["kv_heads"])
    writer.add_rope_dimension_count(hp["head_dim"])
    writer.add_rope_freq_base(hp["rope_theta"])
    writer.add_layer_norm_rms_eps(hp["eps"])
    writer.add_vocab_size(len(tok["tokens"]))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    for name, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("unk", writer.add_unk_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if tok["ids"][name] is not None:
            add(tok["ids"][name])
    writer.add_add_bos_token(tok["add_bos"])
    writer.add_add_space_prefix(False)
    if tok["template"]:
        writer.add_chat_template(tok["template"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    written = 0
    for hf_name, tensor in _state_dict(src).items():
        if hf_name == "lm_head.weight" and hp["tied"]:
            continue  # llama.cpp falls back to token_embd
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"{src}: tensor {hf_name} has no GGUF name for the llama architecture")
        tensor = tensor.float()
        if hf_name.endswith("self_attn.q_proj.weight"):
            tensor = _interleave(tensor, hp["heads"])
        elif hf_name.endswith("self_attn.k_proj.weight"):
            tensor = _interleave(tensor, hp["kv_heads"])
        array = tensor.numpy()
        if dtype == "f16" and array.ndim == 2:  # norms stay f32, as llama.cpp computes them
            array = array.astype(np.float16)
        writer.add_tensor(name, np.ascontiguousarray(array))
        written += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    log.info("converted %s to %s (%s, %d tensors)", src, out, dtype, written)
    return {"dtype": dtype, "tensors": written, "pre_tokenizer": tok["pre"], "converter_version": CONVERTER_VERSION}

"""Generation engines on the tiny model: the compact decode loop gives transformers' own greedy
output, drops finished sequences, samples reproducibly; engine settings fail early and clearly."""

import pytest
import torch

from qresafe_exp.cache import ArtifactCache, RequestCache, content_key
from qresafe_exp.engines import EngineFactory, check_engine
from qresafe_exp.engines.hf import HFEngine
from qresafe_exp.engines.vllm import check_servable
from qresafe_exp.generate import GenerationSpec, generate_cached, render_chat
from qresafe_exp.models import load_model, load_tokenizer, materialize

PROMPTS = [
    "Hi",
    "Write a poem about the sea and the sky at night, in four lines.",
    "What is 2+2?",
    "List three colours.",
    "Explain photosynthesis to a child in one long paragraph, please.",
    "Name a dog.",
    "Why is the sky blue?",
]


@pytest.fixture
def tiny(compose_cfg):
    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama"])
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    tok = load_tokenizer(ref.path)
    return load_model(ref.path, torch.device("cpu")), tok, [render_chat(tok, p, None) for p in PROMPTS]


def _tokens(engine, tok, texts, spec):
    """Token ids per prompt (the tiny random model's text is mostly special tokens, so compare ids)."""
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    decode = engine._compact_decode if engine.decode == "compact" else engine._hf_generate
    generator = torch.Generator().manual_seed(spec.seed) if spec.do_sample else None
    return decode(enc, spec, generator)


def test_compact_greedy_equals_generate_batched_and_one_by_one(tiny):
    model, tok, texts = tiny
    spec = GenerationSpec(max_new_tokens=12)
    compact = _tokens(HFEngine(model, tok), tok, texts, spec)
    batched = _tokens(HFEngine(model, tok, decode="generate"), tok, texts, spec)
    single = [_tokens(HFEngine(model, tok, decode="generate"), tok, [t], spec)[0] for t in texts]
    assert compact == batched == single
    assert all(len(t) == spec.max_new_tokens for t in compact)  # no EOS from this model: full length
    assert HFEngine(model, tok, batch_size=3).generate(texts, spec) == HFEngine(
        model, tok, batch_size=1, decode="generate"
    ).generate(texts, spec)


class _StopAt:
    """A tokenizer stand-in for the decode loops, which only ask it for the stop and pad tokens."""

    def __init__(self, eos_token_id):
        self.eos_token_id = self.pad_token_id = eos_token_id


def test_finished_sequences_leave_the_batch():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # a small vocabulary and a wide init: greedy paths that vary by prompt
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=40,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            initializer_range=0.5,
            eos_token_id=None,
        )
    ).eval()  # the stand-in alone says where to stop
    ids = torch.randint(1, 40, (6, 9))
    mask = torch.ones_like(ids)
    mask[1:3, :3] = 0  # two left-padded rows
    enc = {"input_ids": ids, "attention_mask": mask}
    spec = GenerationSpec(max_new_tokens=10)
    full = HFEngine(model, _StopAt(999))  # outside the vocabulary: nobody stops
    ref = full._compact_decode(enc, spec, None)
    assert full.stats["forward_rows"] == 6 * 10 and all(len(t) == 10 for t in ref)
    # a token that some row first emits at a later step becomes the stop token: that row ends there
    stop = next(t[j] for t in ref for j in range(2, 10) if t[j] not in t[:j])
    engine = HFEngine(model, _StopAt(stop))
    out = engine._compact_decode(enc, spec, None)
    for got, row in zip(out, ref):  # every row = its full output up to (not including) its first stop
        assert got == row[: row.index(stop) if stop in row else len(row)]
    assert any(len(t) < 10 for t in out)
    # the prefill, then one row per decode step while the row is unfinished (not after the last step)
    assert engine.stats["forward_rows"] == 6 + sum(min(len(t), 9) for t in out) < 60
    generated = HFEngine(model, _StopAt(stop), decode="generate")._hf_generate(enc, spec, None)
    assert generated == out  # transformers' generate agrees (it pads finished rows instead)


def test_sampling_is_seeded_per_batch(tiny):
    model, tok, texts = tiny
    engine = HFEngine(model, tok, batch_size=4)
    spec = GenerationSpec(max_new_tokens=12, do_sample=True, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    first, second = _tokens(engine, tok, texts, spec), _tokens(engine, tok, texts, spec)
    assert first == second
    again = HFEngine(model, tok, batch_size=4)
    runs = [again.generate(texts, spec) for _ in range(2)]
    assert runs[0] == runs[1]
    other = dict(max_new_tokens=12, do_sample=True, temperature=0.9, top_p=0.95, top_k=50)
    seeds = [_tokens(engine, tok, texts, GenerationSpec(**other, seed=s)) for s in (7, 8)]
    assert seeds[0] != seeds[1]


def test_greedy_request_keys_are_unchanged_and_sampled_compact_keys_are_tagged(tiny, compose_cfg, tmp_path):
    model, tok, texts = tiny
    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama"])
    factory = EngineFactory(cfg.engine, "unused", torch.device("cpu"), tok, lambda *_: model)
    cache = RequestCache(tmp_path / "r.sqlite")
    greedy = GenerationSpec(max_new_tokens=6)
    generate_cached(factory, "m", texts[:2], greedy, cache)
    stored = cache.get_many("generation/m", [content_key(t, greedy.as_dict(), length=32) for t in texts[:2]])
    assert len(stored) == 2  # the keys a greedy cache always had: old studies stay warm
    sampled = GenerationSpec(max_new_tokens=6, do_sample=True, seed=1)
    assert factory.cache_tag(sampled) == "hf-compact" and factory.cache_tag(greedy) is None
    generate_cached(factory, "m", texts[:2], sampled, cache)
    assert cache.count("generation/m") == 4


def test_engine_settings_fail_before_any_model_loads(compose_cfg):
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="engine=nope is unknown"):
        check_engine(compose_cfg(["debug=smoke", "model=tiny-random-llama", "engine.name=nope"]).engine, cpu)
    with pytest.raises(ValueError, match="engine.decode=fast is unknown"):
        check_engine(compose_cfg(["debug=smoke", "model=tiny-random-llama", "engine.decode=fast"]).engine, cpu)
    with pytest.raises(ValueError, match="set engine.decode=generate"):
        check_engine(compose_cfg(["debug=smoke", "model=tiny-random-llama", "engine.compile=true"]).engine, cpu)
    with pytest.raises(ValueError, match="engine=vllm needs a CUDA device"):
        check_engine(compose_cfg(["debug=smoke", "model=tiny-random-llama", "engine=vllm"]).engine, cpu)


def test_vllm_refuses_checkpoints_with_sidecars(tmp_path):
    check_servable(str(tmp_path))  # a plain checkpoint directory is fine
    (tmp_path / "patch_delta.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="patch delta.*engine=hf"):
        check_servable(str(tmp_path))


def test_engine_dtype_by_capability_and_its_own_cache_keys(monkeypatch):
    """engine.dtype: null keeps the device default (and the old request keys); auto picks bf16 only where
    the CPU has native bf16; output in another dtype is tagged apart in the request cache."""
    from omegaconf import OmegaConf

    from qresafe_exp import devices
    from qresafe_exp.devices import engine_dtype
    from qresafe_exp.engines import generation_dtype

    cpu = torch.device("cpu")
    assert engine_dtype(None, cpu) == engine_dtype("fp32", cpu) == torch.float32
    assert engine_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert engine_dtype("auto", cpu) == torch.float32
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert engine_dtype("auto", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match=r"engine.dtype='fp8' is unknown. Allowed: null"):
        engine_dtype("fp8", cpu)

    def factory(dtype, decode="compact"):
        cfg = OmegaConf.create(
            {
                "name": "hf",
                "decode": decode,
                "batch_size": 4,
                "dtype": dtype,
                "cache_implementation": None,
                "compile": False,
            }
        )
        return EngineFactory(cfg, "unused", cpu, None, load_model)

    greedy, sampled = GenerationSpec(max_new_tokens=4), GenerationSpec(max_new_tokens=4, do_sample=True)
    assert factory(None).cache_tag(greedy) is None and factory("fp32").cache_tag(greedy) is None
    assert factory("bf16").cache_tag(greedy) == "hf-bfloat16"
    assert factory("bf16").cache_tag(sampled) == "hf-compact-bfloat16"
    assert generation_dtype(OmegaConf.create({"name": "vllm", "dtype": "bf16"}), cpu) is None


def test_a_bf16_engine_loads_and_generates_in_bf16(compose_cfg):
    cfg = compose_cfg(["debug=smoke", "engine.dtype=bf16"])
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    tok = load_tokenizer(ref.path)
    factory = EngineFactory(cfg.engine, ref.path, torch.device("cpu"), tok, load_model)
    engine = factory()
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    out = engine.generate([render_chat(tok, p, None) for p in PROMPTS[:3]], GenerationSpec(max_new_tokens=6))
    assert len(out) == 3 and all(isinstance(o, str) for o in out)

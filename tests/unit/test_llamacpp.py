"""llama.cpp for real, on a tiny random Llama 256 wide (k-quant rows need multiples of 256, so no type falls
back): our HF -> GGUF converter, llama.cpp's quantizer for every offered type, the importance matrix, the
GGUF checkpoint format and engine=llamacpp against engine=hf; bad settings fail in one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from qresafe_exp.cache import ArtifactCache
from qresafe_exp.generate import GenerationSpec, render_chat
from qresafe_exp.models import load_model, load_tokenizer, materialize

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (the `server` extra) is not installed")

from qresafe_exp.engines.hf import HFEngine  # noqa: E402
from qresafe_exp.engines.llamacpp import LlamaCppEngine  # noqa: E402
from qresafe_exp.llamacpp import load_llama  # noqa: E402
from qresafe_exp.llamacpp.convert import _interleave, convert  # noqa: E402
from qresafe_exp.llamacpp.quantize import TYPE_BITS, quantize_gguf, tensor_types  # noqa: E402

PROMPTS = ["Hi", "What is 2+2?", "Name three colours, then explain why 1234 is even.", "Why is the sky blue?"]
WIDE = ["model=tiny-talkative", "model.architecture.hidden_size=256", "model.architecture.intermediate_size=512"]
# the ggml tensor type each file type is built around, and the legacy types llama.cpp falls back to
MAIN_TYPE = {
    "Q8_0": "Q8_0",
    "Q6_K": "Q6_K",
    "Q5_K_M": "Q5_K",
    "Q4_K_M": "Q4_K",
    "IQ4_XS": "IQ4_XS",
    "Q3_K_M": "Q3_K",
    "Q2_K": "Q2_K",
}
FALLBACKS = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL"}
ENGINE = {"threads": 1, "parallel": 1, "n_ctx": 512, "n_batch": 512, "gguf_dtype": "f32"}


@pytest.fixture(scope="module")
def wide(shared_cache, tmp_path_factory):
    """(FP checkpoint dir, its f32 GGUF, the cell config), built once for this module."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from qresafe_exp.conf import CONF_DIR
    from qresafe_exp.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "debug=smoke",
                *WIDE,
                "quant=gguf",
                "quant.type=Q8_0",
                "quant.threads=1",
                f"paths.cache_dir={shared_cache}",
            ],
        )
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    gguf = tmp_path_factory.mktemp("gguf") / "fp.gguf"
    convert(ref.path, gguf, "f32")
    return ref.path, gguf, cfg


def _engine(path, tok, tmp_path, **cfg):
    from omegaconf import OmegaConf

    return LlamaCppEngine(
        str(path),
        tok,
        OmegaConf.create({**ENGINE, **cfg}),
        artifacts=ArtifactCache(tmp_path / "cache"),
        model_key="test",
    )


def test_conversion_writes_the_llama_tensors_and_tokenizer(wide):
    from gguf import GGUFReader
    from safetensors.torch import load_file

    path, gguf, _ = wide
    reader = GGUFReader(gguf)
    names = {t.name for t in reader.tensors}
    per_block = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"}
    assert names == {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{b}.{n}.weight" for b in (0, 1) for n in per_block
    }  # tied: no output.weight
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    tok = load_tokenizer(path)
    assert field("general.architecture") == "llama" and field("llama.block_count") == 2
    assert field("llama.embedding_length") == 256 and field("llama.attention.head_count_kv") == 2
    tokens, types = reader.fields["tokenizer.ggml.tokens"], reader.fields["tokenizer.ggml.token_type"]
    assert len(tokens.data) == len(tok) and tokens.contents(2) == "<|im_end|>"
    assert types.contents(slice(0, 3)) == [3, 3, 3] and types.contents(500) == 1  # special added = CONTROL
    # the model's own stop id (generation_config.json) before the tokenizer's
    eos = json.loads((Path(path) / "generation_config.json").read_text())["eos_token_id"]
    assert field("tokenizer.ggml.eos_token_id") == eos and field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.chat_template") == tok.chat_template
    # q rows are interleaved per head for llama.cpp's RoPE, v rows are copied as they are
    weights = load_file(f"{path}/model.safetensors")
    by_name = {t.name: np.asarray(t.data) for t in reader.tensors}
    hf_q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert np.array_equal(by_name["blk.0.attn_q.weight"], _interleave(hf_q, 4).numpy())
    assert not np.array_equal(by_name["blk.0.attn_q.weight"], hf_q.numpy())
    assert np.array_equal(by_name["blk.0.attn_v.weight"], weights["model.layers.0.self_attn.v_proj.weight"].numpy())


def test_llamacpp_on_the_converted_model_matches_transformers(wide, tmp_path):
    path, gguf, _ = wide
    tok = load_tokenizer(path)
    llm = load_llama(str(gguf), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    try:
        for text in ["Hello 12345 world, how are you?", render_chat(tok, PROMPTS[2], None)]:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # the same tokenizer
        llm.reset()
        llm.eval(ids)
        model = load_model(path, torch.device("cpu"))
        with torch.no_grad():
            hf = model(torch.tensor([ids])).logits[0].numpy()
        ours = np.asarray(llm.scores[: len(ids)])
        # float32 both, summed in other orders: close (a wrong q/k layout is off by the logits' own size)
        assert np.abs(ours - hf).max() < 0.1 and (ours.argmax(-1) == hf.argmax(-1)).all()
    finally:
        llm.close()
    # the engines, greedy on the same rendered prompts: the same answers
    texts = [render_chat(tok, p, None) for p in PROMPTS]
    spec = GenerationSpec(max_new_tokens=12)
    engine = _engine(path, tok, tmp_path)
    try:
        assert engine.generate(texts, spec) == HFEngine(model, tok).generate(texts, spec)
        assert engine.gguf.parent.parent.name == "gguf"  # the FP checkpoint's conversion is a cached artifact
    finally:
        engine.close()


# a k-quant mix in the default run (IQ4_XS: the importance-matrix test, Q8_0: the GGUF-cell test below);
# every type with `make test-full`
@pytest.mark.parametrize(
    "type_name", [t if t == "Q4_K_M" else pytest.param(t, marks=pytest.mark.slow) for t in TYPE_BITS]
)
def test_every_offered_type_quantizes_and_llamacpp_generates(wide, tmp_path, type_name):
    _, gguf, _ = wide
    out = tmp_path / f"{type_name}.gguf"
    quantize_gguf(gguf, out, type_name, threads=1)
    types = tensor_types(out)["weights"]
    assert MAIN_TYPE[type_name] in types and not FALLBACKS & set(types), types
    assert out.stat().st_size < gguf.stat().st_size
    llm = load_llama(str(out), n_ctx=128, n_threads=1, verbose=False)
    try:
        tokens = list(zip(range(5), llm.generate([1, 9690, 198], temp=0.0)))
        assert len(tokens) == 5
    finally:
        llm.close()


def test_importance_matrix_changes_the_rounding(wide, tmp_path):
    from qresafe_exp.llamacpp.imatrix import compute_imatrix

    path, gguf, _ = wide
    records = [{"prompt": p, "response": "Sure. " + p} for p in PROMPTS * 2]
    imatrix = compute_imatrix(path, records, num_samples=8, max_seq_length=64, seed=0)
    assert set(imatrix) == {
        f"blk.{b}.{n}.weight"
        for b in (0, 1)
        for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    }
    assert imatrix["blk.0.ffn_down.weight"].shape == (512,) and (imatrix["blk.0.attn_q.weight"] > 0).all()
    plain, weighted = tmp_path / "plain.gguf", tmp_path / "imat.gguf"
    quantize_gguf(gguf, plain, "IQ4_XS", threads=1)
    quantize_gguf(gguf, weighted, "IQ4_XS", threads=1, imatrix=imatrix)
    assert plain.stat().st_size == weighted.stat().st_size and plain.read_bytes() != weighted.read_bytes()
    types = tensor_types(weighted)["weights"]
    assert "IQ4_XS" in types and not FALLBACKS & set(types)


def test_a_gguf_cell_is_detected_loaded_by_transformers_and_run_by_llamacpp(wide, tmp_path):
    from qresafe_exp.formats import format_of
    from qresafe_exp.quant.gguf import GgufQuantizer

    path, _, cfg = wide
    cell = tmp_path / "cell"
    cell.mkdir()
    assert cfg.quant.bits == 8 and cfg.quant.tag == "gguf-Q8_0"  # a named type sets the bits axis
    info = GgufQuantizer().quantize(path, cell, cfg.quant, None, None, 0)
    assert info["type"] == "Q8_0" and info["tensor_types"]["weights"] == {"Q8_0": 15}
    assert not list(cell.glob("source-*"))  # the f32 intermediate is not kept
    fmt = format_of(str(cell))
    assert fmt.name == "gguf" and fmt.file_type == "Q8_0"
    from qresafe_exp.engines.vllm import check_servable

    with pytest.raises(ValueError, match="GGUF cell .* engine=llamacpp"):
        check_servable(str(cell))
    q8 = load_model(str(cell), torch.device("cpu"))  # transformers dequantizes, and undoes the q/k interleave
    fp = load_model(path, torch.device("cpu"))
    a, b = q8.model.layers[0].self_attn.q_proj.weight, fp.model.layers[0].self_attn.q_proj.weight
    assert (a - b).norm() / b.norm() < 0.01
    tok = load_tokenizer(str(cell))
    engine = _engine(cell, tok, tmp_path)
    try:
        assert engine.gguf == cell / "model.gguf"
        outputs = engine.generate([render_chat(tok, p, None) for p in PROMPTS], GenerationSpec(max_new_tokens=8))
        assert len(outputs) == len(PROMPTS) and all(isinstance(o, str) for o in outputs)
    finally:
        engine.close()


def test_parallel_slots_and_sampling_are_reproducible(wide, tmp_path):
    path, _, _ = wide
    tok = load_tokenizer(path)
    texts = [render_chat(tok, p, None) for p in PROMPTS]
    greedy, sampled = (
        GenerationSpec(max_new_tokens=8),
        GenerationSpec(max_new_tokens=8, do_sample=True, temperature=1.0, seed=3),
    )
    one, two = _engine(path, tok, tmp_path), _engine(path, tok, tmp_path, threads=2, parallel=2)
    try:
        assert one.generate(texts, greedy) == two.generate(texts, greedy)
        assert one.generate(texts, sampled) == two.generate(texts, sampled)  # a seed per prompt, not per slot
        assert one.stats["generated_tokens"] > 0
    finally:
        one.close()
        two.close()


def test_engine_refuses_checkpoints_it_cannot_run(tmp_path):
    from omegaconf import OmegaConf

    packed = tmp_path / "rtn"
    packed.mkdir()
    (packed / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "compressed-tensors"}}))
    with pytest.raises(ValueError, match="a compressed-tensors checkpoint. Run this cell with engine=hf"):
        LlamaCppEngine(str(packed), None, OmegaConf.create(ENGINE))


def test_converter_refuses_what_it_does_not_handle(wide, tmp_path):
    path, _, _ = wide
    other = tmp_path / "other"
    shutil.copytree(path, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gemma"}))
    with pytest.raises(ValueError, match="model_type='gemma'"):
        convert(other, tmp_path / "x.gguf")
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Whitespace"}
    (other / "config.json").write_text(json.dumps(config))
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match="PRE_TOKENIZERS"):
        convert(other, tmp_path / "x.gguf")


@pytest.mark.parametrize("amx", [True, False])
def test_weight_repacking_is_off_only_on_a_cpu_with_amx(wide, monkeypatch, amx):
    """llama.cpp's extra buffer types (AMX tiles, repacked k-quants) segfault in decode on an AMX CPU
    (test_every_offered_type_... on Q4_K_M did, 2026-12-07): off there, on elsewhere, and llama-cpp-python's
    own defaults are left as they were."""
    from qresafe_exp import devices

    monkeypatch.setattr(devices, "cpu_has_amx", lambda: amx)
    lib = llama_cpp.llama_cpp  # the module Llama reads its defaults from
    before = lib.llama_model_default_params
    llm = load_llama(str(wide[1]), n_ctx=64, n_threads=1, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is (not amx)
        assert len(list(zip(range(3), llm.generate([1, 9690, 198], temp=0.0)))) == 3
    finally:
        llm.close()
    assert lib.llama_model_default_params is before and lib.llama_model_default_params().use_extra_bufts

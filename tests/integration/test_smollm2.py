"""The embedded default model end to end (slow: `make test-full`)."""

import pytest
import torch

from qresafe_exp.engines.hf import HFEngine
from qresafe_exp.generate import GenerationSpec, render_chat
from qresafe_exp.models import load_model, load_tokenizer, materialize
from qresafe_exp.pipeline import run_cell

pytestmark = pytest.mark.slow


def test_gguf_model_is_converted_once_and_answers_sensibly(compose_cfg):
    from qresafe_exp.cache import ArtifactCache

    cfg = compose_cfg([])
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir))
    again = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir))
    assert ref.key == again.key
    tok = load_tokenizer(ref.path)
    engine = HFEngine(load_model(ref.path, torch.device("cpu")), tok, batch_size=2)
    text = render_chat(tok, "What is the capital of France? Answer briefly.", None)
    (answer,) = engine.generate([text], GenerationSpec(max_new_tokens=16))
    assert "Paris" in answer


def test_rtn8_cell_on_smollm2(compose_cfg):
    cfg = compose_cfg(["quant=rtn", "bits=8", "eval.limit=8", "eval.max_new_tokens=48", "logger=none"])
    metrics = run_cell(cfg)
    assert metrics["scores"]["advbench"]["asr"]["n"] == 8
    assert not metrics["summary"]["broken"]  # 8-bit RTN keeps SmolLM2 fluent

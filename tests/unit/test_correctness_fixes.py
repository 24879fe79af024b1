"""Correctness fixes of issue 18 item 6: a hub model's revision and trust_remote_code reach the loaders,
both engines stop on every eos id of the model's generation_config, the judge's key never travels in
clear to another host, and the tracker's scrubber masks secrets (URL credentials too) but not
ordinary fields like max_new_tokens."""

import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from qresafe_exp.cache import ArtifactCache
from qresafe_exp.conf import CONF_DIR as CONF
from qresafe_exp.engines.hf import HFEngine
from qresafe_exp.generate import GenerationSpec, render_chat
from qresafe_exp.models import load_model, load_tokenizer, materialize, trusts_remote_code
from qresafe_exp.schema import ModelConfig

PROMPTS = [
    "Hi",
    "Write a poem about the sea.",
    "What is 2+2?",
    "List three colours.",
    "Name a dog.",
    "Why is the sky blue?",
]


@pytest.fixture
def tiny_ref(compose_cfg):
    cfg = compose_cfg(["debug=smoke", "model=tiny-random-llama"])
    return materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths), cfg


def _hub_cfg(**fields):
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), {"name": "hubby", "source": "hub", **fields})


# ------------------------------------------------------------ 1. model.revision
def test_a_hub_revision_loads_that_revision_not_main(tiny_ref, tmp_path, monkeypatch):
    """A local hub cache holding two revisions of one repo: `main` and a pinned commit with other weights."""
    import huggingface_hub.constants as hub

    ref, cfg = tiny_ref
    repo = tmp_path / "hub" / "models--qresafe-test--tiny"
    main_sha, pinned_sha = "a" * 40, "b" * 40
    model = load_model(ref.path, torch.device("cpu"))
    tok = load_tokenizer(ref.path)
    for sha in (main_sha, pinned_sha):
        if sha == pinned_sha:
            with torch.no_grad():
                model.lm_head.weight.add_(1.0)  # the pinned revision's weights differ from main's
        model.save_pretrained(repo / "snapshots" / sha)
        tok.save_pretrained(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main_sha)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    cache = ArtifactCache(cfg.paths.cache_dir)

    pinned = materialize(_hub_cfg(path="qresafe-test/tiny", revision=pinned_sha), cache)
    on_main = materialize(_hub_cfg(path="qresafe-test/tiny", revision="main"), cache)
    assert Path(pinned.path) == repo / "snapshots" / pinned_sha and Path(on_main.path) == repo / "snapshots" / main_sha
    assert pinned.key != on_main.key
    head = load_model(pinned.path, torch.device("cpu")).lm_head.weight
    assert torch.equal(head, model.lm_head.weight)  # the pinned weights, not main's
    assert not torch.equal(load_model(on_main.path, torch.device("cpu")).lm_head.weight, head)
    assert load_tokenizer(pinned.path).eos_token_id == tok.eos_token_id


def test_a_revision_on_a_local_directory_is_refused(tiny_ref):
    ref, cfg = tiny_ref
    with pytest.raises(ValueError, match="model.revision=v2 applies to hub ids.*drop model.revision"):
        materialize(_hub_cfg(path=ref.path, revision="v2"), ArtifactCache(cfg.paths.cache_dir))


# ------------------------------------------------------------ 2. model.trust_remote_code
CUSTOM_CONFIG = """from transformers import LlamaConfig


class TinyCustomConfig(LlamaConfig):
    model_type = "qresafe_tiny_custom"
"""
CUSTOM_MODEL = """from transformers import LlamaForCausalLM

from .configuration_tiny_custom import TinyCustomConfig


class TinyCustomForCausalLM(LlamaForCausalLM):
    config_class = TinyCustomConfig
"""


def _custom_code_checkpoint(src: str, out: Path) -> Path:
    """The tiny model as a repo that ships its own modeling code (an architecture transformers lacks)."""
    import json

    shutil.copytree(src, out)
    (out / "configuration_tiny_custom.py").write_text(CUSTOM_CONFIG)
    (out / "modeling_tiny_custom.py").write_text(CUSTOM_MODEL)
    config = json.loads((out / "config.json").read_text())
    config.update(
        model_type="qresafe_tiny_custom",
        architectures=["TinyCustomForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_tiny_custom.TinyCustomConfig",
            "AutoModelForCausalLM": "modeling_tiny_custom.TinyCustomForCausalLM",
        },
    )
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_trust_remote_code_reaches_the_loaders(tiny_ref, tmp_path):
    ref, cfg = tiny_ref
    path = _custom_code_checkpoint(ref.path, tmp_path / "custom")
    cache = ArtifactCache(cfg.paths.cache_dir)

    untrusted = materialize(_hub_cfg(path=str(path)), cache)
    assert not trusts_remote_code(untrusted.path)
    with pytest.raises(ValueError, match="trust_remote_code"):  # transformers' own refusal
        load_model(untrusted.path, torch.device("cpu"))

    trusted = materialize(_hub_cfg(path=str(path), trust_remote_code=True), cache)
    assert trusts_remote_code(trusted.path)  # what the vLLM engine passes as LLM(trust_remote_code=...)
    model = load_model(trusted.path, torch.device("cpu"))
    assert type(model).__name__ == "TinyCustomForCausalLM"
    assert load_tokenizer(trusted.path).eos_token_id is not None


# ------------------------------------------------------------ 3. every eos id of generation_config
def test_both_decodes_and_vllm_stop_on_every_generation_config_eos(tiny_ref, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from qresafe_exp.engines.vllm import request_kwargs, stop_ids_of

    tok = load_tokenizer(tiny_ref[0].path)
    texts = [render_chat(tok, p, None) for p in PROMPTS]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    spec = GenerationSpec(max_new_tokens=12)
    torch.manual_seed(0)  # a wide init: greedy paths that vary by prompt (the smoke model repeats one token)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            initializer_range=0.5,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()
    full = HFEngine(model, tok)._compact_decode(enc, spec, None)
    assert all(len(t) == 12 for t in full)  # it never emits the tokenizer's eos
    # a second eos (like Gemma's <end_of_turn>): a token some row first emits after a few steps
    extra = next(t[j] for t in full for j in range(2, 12) if t[j] not in t[:j])
    model.generation_config.eos_token_id = [tok.eos_token_id, extra]
    model.save_pretrained(tmp_path / "two_eos")
    tok.save_pretrained(tmp_path / "two_eos")

    loaded = load_model(str(tmp_path / "two_eos"), torch.device("cpu"))
    expected = [row[: row.index(extra)] if extra in row else row for row in full]
    assert any(len(row) < 12 for row in expected)
    assert HFEngine(loaded, tok)._compact_decode(enc, spec, None) == expected
    assert HFEngine(loaded, tok, decode="generate")._hf_generate(enc, spec, None) == expected
    stop_ids = stop_ids_of(str(tmp_path / "two_eos"), tok)  # what vLLM is told to stop on
    assert sorted(stop_ids) == sorted({tok.eos_token_id, extra})
    assert sorted(request_kwargs(spec, 0, stop_ids)["stop_token_ids"]) == sorted(stop_ids)


# ------------------------------------------------------------ 4. the judge's key: https or loopback only
def _openai_judge(base_url, **extra):
    from qresafe_exp.judges import build_judge
    from qresafe_exp.schema import OpenAIJudgeConfig

    return build_judge(
        OmegaConf.merge(
            OmegaConf.structured(OpenAIJudgeConfig(name="openai")),
            {"base_url": base_url, "model": "m", "api_key_env": "QRESAFE_TEST_KEY", **extra},
        )
    )


@pytest.mark.parametrize(
    "url", ["http://judge.example.org:8000/v1", "http://10.0.0.7/v1", "http://127.0.0.1.nip.io/v1"]
)
def test_the_key_is_not_sent_in_clear_to_another_host(url, monkeypatch):
    monkeypatch.setenv("QRESAFE_TEST_KEY", "sk-test-123")
    with pytest.raises(ValueError, match=r"judge\.base_url=.*judge\.allow_insecure_key=true") as err:
        _openai_judge(url)  # refused when the judge is built, before any request
    assert "\n" not in str(err.value) and "sk-test-123" not in str(err.value)
    from qresafe_exp.judges.http import ChatClient

    with pytest.raises(ValueError, match="judge.base_url"):
        ChatClient(url, "m", api_key_env="QRESAFE_TEST_KEY")
    assert _openai_judge(url, allow_insecure_key=True).client  # the explicit opt-in
    monkeypatch.delenv("QRESAFE_TEST_KEY")
    assert _openai_judge(url).client  # no key, nothing to leak


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://localhost:8000/v1",
        "http://127.0.0.1:8765/v1",
        "http://127.3.2.1/v1",
        "http://[::1]:8000/v1",
    ],
)
def test_the_key_goes_to_https_and_loopback(url, monkeypatch):
    monkeypatch.setenv("QRESAFE_TEST_KEY", "sk-test-123")
    assert _openai_judge(url).client.sdk.auth_headers == {"Authorization": "Bearer sk-test-123"}


def test_the_openai_config_example_for_a_local_server_sends_no_key():
    text = (CONF / "judge" / "openai.yaml").read_text().replace("\\\n#", "")
    local = [line for line in text.splitlines() if "judge.base_url=http://" in line]
    assert local and all("judge.api_key_env=null" in line for line in local)


# ------------------------------------------------------------ 5. the tracker's secret scrubber
def test_ordinary_fields_survive_the_scrubber():
    from qresafe_exp.tracking import scrub_secrets

    cfg = {
        "eval": {"max_new_tokens": 128, "mtbench": {"max_new_tokens": 1024}},
        "judge": {
            "max_tokens": 1024,
            "mtbench_max_tokens": 2048,
            "max_response_tokens": 512,
            "keyword_list": "gcg_transfer",
            "base_url": "https://api.openai.com/v1",
        },
        "stats": {
            "num_tokens": 7,
            "tokens_per_s": 3.5,
            "eos_token_id": 2,
            "tokenizer": "t",
            "key": "abc123",
            "author": "x",
        },
    }
    assert scrub_secrets(cfg) == cfg


def test_secrets_and_url_credentials_are_masked():
    from qresafe_exp.tracking import scrub_secrets

    cfg = {
        "judge": {"api_key": "sk-1", "base_url": "https://user:s3cret@proxy.example.org:8443/v1"},
        "env": {
            "HF_TOKEN": "hf_2",
            "hf_token": "hf_3",
            "WANDB_API_KEY": "w4",
            "token": "t5",
            "auth": "a6",
            "db_password": "p7",
            "client_secret": "c8",
            "apiKey": "k9",
            "x-api-key": "k10",
            "Authorization": "Bearer b11",
            "openai_api_key": None,
        },
        "sources": ["git+https://deploy:ghp_12@github.com/org/repo.git", "plain text, no url"],
    }
    clean = scrub_secrets(cfg)
    assert clean["judge"] == {"api_key": "***", "base_url": "https://***@proxy.example.org:8443/v1"}
    assert all(v == "***" for k, v in clean["env"].items() if k != "openai_api_key")
    assert clean["env"]["openai_api_key"] is None
    assert clean["sources"] == ["git+https://***@github.com/org/repo.git", "plain text, no url"]
    for secret in ("sk-1", "s3cret", "hf_2", "hf_3", "w4", "t5", "a6", "p7", "c8", "k9", "k10", "b11", "ghp_12"):
        assert secret not in repr(clean)

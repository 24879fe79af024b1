"""A cell with hub.push=true, in-process on tiny-random-llama: after metrics.json is written, the quantized
checkpoint and a card holding this cell's scores go to a hub on loopback (tests/hub_server.LocalHub)."""

import json
from pathlib import Path

import pytest

from qresafe_exp.pipeline import cell_dir, run_cell
from tests.hub_server import LocalHub


@pytest.fixture
def local_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # requests go to 127.0.0.1 only
    monkeypatch.setenv("HF_TOKEN", "hf_cell_test_token")
    server = LocalHub()
    yield server
    server.close()


def test_a_cell_pushes_its_checkpoint_and_card_after_its_scores(compose_cfg, local_hub):
    cfg = compose_cfg(
        [
            "debug=smoke",
            "model=tiny-random-llama",
            "quant=rtn",
            "bits=8",
            "eval.limit=2",
            "hub.push=true",
            "hub.repo_id=me/qresafe-${cell}",
            f"hub.endpoint={local_hub.url}",
        ]
    )
    metrics = run_cell(cfg)
    repo_id = f"me/qresafe-{cfg.cell}"
    assert metrics["hub"]["pushed"] and metrics["hub"]["repo_id"] == repo_id
    on_disk = json.loads((cell_dir(cfg, cfg.cell) / "metrics.json").read_text())
    assert on_disk["hub"] == metrics["hub"]  # recorded beside the scores

    files = local_hub.repos[repo_id]["files"]
    checkpoint = Path(cfg.paths.cache_dir) / "quantize" / metrics["artifacts"]["quantize"]
    assert files["config.json"] == (checkpoint / "config.json").read_bytes()
    assert "spec.json" not in files and "_SUCCESS" not in files
    card = files["README.md"].decode()
    asr = metrics["scores"]["advbench"]["asr"]
    assert f"| advbench | asr | {asr['rate']:.4g} | [{asr['ci95'][0]:.4g}, {asr['ci95'][1]:.4g}] | 2 |" in card
    assert "| tiny-random-llama (model.source=random) | rtn | 8 |" in card

"""The tracker: secrets never reach it, and a W&B cell run (a real offline run file, read back with
tests/wandb_files.py) keeps every interval, the samples and checkpoint artifacts, and a failure."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from qresafe_exp.report.dashboard import wandb_html, wandb_links
from qresafe_exp.tracking import WandbTracker, headline, scrub_secrets
from tests import wandb_files


def test_secret_looking_keys_are_scrubbed_recursively():
    cfg = {
        "judge": {"api_key": "sk-123", "base_url": "http://x"},
        "list": [{"HF_TOKEN": "hf_abc"}],
        "openai_api_key": None,
        "model": "m",
    }
    clean = scrub_secrets(cfg)
    assert clean["judge"] == {"api_key": "***", "base_url": "http://x"}
    assert clean["list"] == [{"HF_TOKEN": "***"}]
    assert clean["openai_api_key"] is None and clean["model"] == "m"
    assert "sk-123" not in repr(clean) and "hf_abc" not in repr(clean)


# ---------------------------------------------------------------- W&B runs (real offline run files)
SCORES = {
    "advbench": {
        "metric": "asr",
        "asr": {"rate": 0.25, "k": 1, "n": 4, "ci95": [0.0456, 0.6994]},
        "degenerate": {"rate": 0.0, "k": 0, "n": 4, "ci95": [0.0, 0.4899]},
    },
    "alpaca_eval_ppl": {
        "metric": "reference_perplexity",
        "reference_perplexity": {"value": 8.9, "n": 4, "ci95": [5.4, 14.7]},
    },
}


def _tracker(tmp_path, monkeypatch, **cfg) -> WandbTracker:
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging, not ~/.local
    tracker = WandbTracker(OmegaConf.create({"project": "p", "entity": None, "mode": "offline", "tags": [], **cfg}))
    tracker.start(run_dir=tmp_path / "cell", name="cell", group="study", job_type="cell", config={}, tags=[])
    return tracker


def test_headline_gives_each_suite_its_score_interval_and_n_as_flat_keys():
    assert headline(SCORES) == {
        "asr/advbench": 0.25,
        "asr/advbench_ci_low": 0.0456,
        "asr/advbench_ci_high": 0.6994,
        "asr/advbench_n": 4,
        "reference_perplexity/alpaca_eval_ppl": 8.9,
        "reference_perplexity/alpaca_eval_ppl_ci_low": 5.4,
        "reference_perplexity/alpaca_eval_ppl_ci_high": 14.7,
        "reference_perplexity/alpaca_eval_ppl_n": 4,
    }


def test_run_keeps_every_interval_and_the_samples_artifact(tmp_path, monkeypatch):
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"id": 1, "response": "no", "verdict": false}\n')
    tracker = _tracker(tmp_path, monkeypatch)
    run_dir = Path(tracker.run_path)
    try:
        tracker.log_metrics({**headline(SCORES), "scores": SCORES})
        tracker.log_artifact("samples-m.rtn w8", "samples", files={"samples.jsonl": samples}, metadata={"rows": 1})
    finally:
        tracker.finish()
    summary = wandb_files.summary(run_dir)
    assert summary["asr/advbench_ci_low"] == 0.0456 and summary["asr/advbench_ci_high"] == 0.6994
    # the nested copy keeps its intervals too (a list was dropped before): every rate, not only the headline
    assert summary["scores/advbench/degenerate/ci95_high"] == 0.4899
    assert summary["scores/alpaca_eval_ppl/reference_perplexity/ci95_low"] == 5.4
    [artifact] = wandb_files.artifacts(run_dir)
    assert (artifact.type, artifact.name) == ("samples", "samples-m.rtn-w8")  # a legal artifact name
    [entry] = artifact.manifest.contents
    assert entry.path == "samples.jsonl"
    # uploaded (make wandb-sync) from a copy kept with the run, not from the cell's file a rerun rewrites
    kept = Path(entry.local_path)
    assert kept.is_relative_to(run_dir) and kept.read_text() == samples.read_text()
    assert json.loads(artifact.metadata) == {"rows": 1}
    assert wandb_files.exit_code(run_dir) == 0


def test_checkpoint_artifact_references_the_files_without_copying_them(tmp_path, monkeypatch):
    checkpoint = tmp_path / "cache" / "quantize" / "abc123"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 1024)
    tracker = _tracker(tmp_path, monkeypatch)
    run_dir = Path(tracker.run_path)
    try:
        tracker.log_artifact("checkpoint-abc123", "model", references={"checkpoint": checkpoint})
    finally:
        tracker.finish()
    [artifact] = wandb_files.artifacts(run_dir)
    assert artifact.type == "model"
    refs = [entry.ref for entry in artifact.manifest.contents]
    assert refs and all(ref.startswith(checkpoint.as_uri()) for ref in refs)
    assert not any(entry.local_path for entry in artifact.manifest.contents)  # nothing staged for upload


def test_a_failed_cell_closes_its_run_as_failed_and_keeps_what_it_logged(compose_cfg, monkeypatch, tmp_path):
    from qresafe_exp.pipeline import cell_dir, cell_run
    from qresafe_exp.resources import StageMonitor

    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    cfg = compose_cfg(["debug=smoke", "logger=wandb", "logger.mode=offline", "+judge.api_key=sk-secret-0123"])
    monitor = StageMonitor()
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with cell_run(cfg, "the-cell", monitor) as tracker:
            monitor.on_end = tracker.log_stage
            run_dir = Path(tracker.run_path)
            with monitor.stage("quantize"):
                pass
            with monitor.stage("patch"):
                tracker.log_step("patch/train/history", {"step": 0, "loss": 0.69})
                raise RuntimeError("CUDA out of memory")
    assert run_dir.is_relative_to(cell_dir(cfg, "the-cell"))
    assert wandb_files.exit_code(run_dir) == 1  # W&B shows the run as failed
    summary = wandb_files.summary(run_dir)
    assert summary["error"] == "RuntimeError in stage patch: CUDA out of memory"
    assert "stage/quantize/seconds" in summary  # logged when that stage finished
    assert wandb_files.series(run_dir, "patch/train/history") == [{"step": 0, "loss": 0.69}]
    config = next(r.run.config for r in wandb_files.records(run_dir) if r.WhichOneof("record_type") == "run")
    assert "smoke" in str(config) and "sk-secret-0123" not in str(config)  # the scrubbed resolved config


def test_dashboard_names_the_study_group_and_links_it_once_online():
    offline = {
        "tracking": {
            "wandb_run_dir": "/x",
            "project": "qresafe_exp",
            "entity": None,
            "group": "s1",
            "mode": "offline",
            "run_id": "a",
        }
    }
    online = {
        "tracking": {
            "wandb_run_dir": "/y",
            "project": "qresafe_exp",
            "entity": "lab",
            "group": "s1",
            "mode": "online",
            "run_id": "b",
            "run_url": "https://wandb.ai/lab/qresafe_exp/runs/b",
            "group_url": "https://wandb.ai/lab/qresafe_exp/groups/s1",
        }
    }
    untracked = {"tracking": {"wandb_run_dir": None}}
    links = wandb_links([offline, offline, untracked])
    assert links == [
        {"entity": None, "project": "qresafe_exp", "group": "s1", "modes": ["offline"], "cells": 2, "url": None}
    ]
    assert "qresafe_exp, group s1" in wandb_html(links) and "make wandb-sync" in wandb_html(links)
    [link] = wandb_links([online])
    assert '<a href="https://wandb.ai/lab/qresafe_exp/groups/s1">lab/qresafe_exp, group s1</a>' in wandb_html([link])
    assert wandb_html(wandb_links([untracked])) == ""

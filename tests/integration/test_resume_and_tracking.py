"""A sweep killed with SIGKILL resumes without redoing finished work; a cell's W&B run (real offline
run files) is logged as it runs, and again from the caches on a rerun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qresafe_exp.patch.trainer import TRAIN_SERIES
from tests import wandb_files
from tests.conftest import ROOT, run_cli


def test_sweep_killed_mid_run_resumes_and_redoes_only_what_is_missing(tmp_path):
    out = tmp_path / "outputs"
    args = ["-m", "debug=smoke", "model=tiny-random-llama", "quant=rtn,gptq", "bits=4,8", f"paths.output_dir={out}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "qresafe_exp", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    done = []
    while time.time() < deadline and not done:
        done = list((out / "cache" / "quantize").glob("*/_SUCCESS"))
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done, "the first quantized artifact never appeared"
    first = {p.parent.name: p.stat().st_mtime for p in (out / "cache" / "quantize").glob("*/_SUCCESS")}

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = {p.parent.name: p.stat().st_mtime for p in (out / "cache" / "quantize").glob("*/_SUCCESS")}
    assert len(after) == 4
    for key, mtime in first.items():  # finished artifacts were reused, not rebuilt
        assert after[key] == mtime
    assert not list((out / "cache").rglob(".tmp-*"))  # no torn artifact left behind
    assert len(list((out / "studies" / "smoke").glob("*/metrics.json"))) == 5


# a qresafe patch shrunk to a few steps (8 prompts, 16 tokens, 2 pairs a step, a mask re-selection every 2)
SMALL_PATCH = [
    "patch=qresafe",
    "patch.data.num_harmful=8",
    "patch.data.max_new_tokens=16",
    "patch.lora_r=4",
    "patch.lora_alpha=8",
    "patch.batch_size=2",
    "patch.mask_every=2",
    "patch.eval_adapter=false",
]


def test_wandb_cell_run_streams_its_stages_and_patch_steps_and_a_cached_rerun_logs_the_same(tmp_path, shared_cache):
    """A real offline W&B run per cell (debug=smoke, a 2-bit RTN cell patched with qresafe): stages and
    patch-training steps logged as they happen, every rate with its CI, samples as an Artifact, no
    secret anywhere; the rerun (every stage cached) logs the same, and its checkpoints when asked."""
    out = tmp_path / "outputs"
    secret = "sk-test-should-never-be-written-0123456789"
    args = [
        "debug=smoke",
        "logger=wandb",
        "quant=rtn",
        "bits=2",
        *SMALL_PATCH,
        f"paths.output_dir={out}",
        f"paths.cache_dir={shared_cache}",
    ]  # the tiny model built once a session
    env = {"OPENAI_API_KEY": secret, "WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [cell] = [p.parent for p in (out / "studies" / "smoke").glob("*/metrics.json") if ".fp." not in p.parent.name]
    metrics = json.loads((cell / "metrics.json").read_text())
    tracking = metrics["tracking"]
    run_dir = Path(tracking["wandb_run_dir"])
    assert run_dir.name.startswith("offline-run-") and run_dir.is_relative_to(cell)
    assert (tracking["project"], tracking["group"], tracking["mode"]) == ("qresafe_exp", "smoke", "offline")
    assert wandb_files.exit_code(run_dir) == 0

    rows = wandb_files.history(run_dir)
    stage_at = {k.split("/")[1]: i for i, row in enumerate(rows) for k in row if k.startswith("stage/")}
    results_at = next(i for i, row in enumerate(rows) if "asr/advbench" in row)
    assert list(stage_at)[:5] == ["model", "reference_eval", "quantize", "patch", "eval"]  # in the order they ran
    assert max(stage_at.values()) < results_at  # each as it finished, before the cell's results
    # the patch's training curve, one row per optimizer step, streamed during the patch stage
    history = metrics["patch"]["train"]["history"]
    steps_at = [i for i, row in enumerate(rows) if f"{TRAIN_SERIES}/step" in row]
    assert len(steps_at) == len(history) > 0 and stage_at["quantize"] < steps_at[0] < steps_at[-1] < stage_at["patch"]
    streamed = wandb_files.series(run_dir, TRAIN_SERIES)
    assert [(r["step"], r["loss"], r["dpo_margin"]) for r in streamed] == [
        (r["step"], r["loss"], r["dpo_margin"]) for r in history
    ]
    assert streamed[-1]["mask_reselected_count"] == metrics["patch"]["train"]["mask_reselections"] > 0
    # every rate with its interval and n, and the samples as an Artifact of type "samples"
    summary = wandb_files.summary(run_dir)
    asr = metrics["scores"]["advbench"]["asr"]
    assert (
        summary["asr/advbench"],
        summary["asr/advbench_ci_low"],
        summary["asr/advbench_ci_high"],
        summary["asr/advbench_n"],
    ) == (asr["rate"], *asr["ci95"], asr["n"])
    assert summary["scores/advbench/asr/ci95_low"] == asr["ci95"][0]
    # no checkpoint: logger.log_checkpoints is off by default (W&B keeps its tables as run_table artifacts)
    [samples] = [a for a in wandb_files.artifacts(run_dir) if a.type != "run_table"]
    assert (samples.type, samples.name) == ("samples", f"samples-{cell.name}")
    assert [entry.path for entry in samples.manifest.contents] == ["samples.jsonl"]
    # the FP reference cell has a run of its own, in the same group
    reference = json.loads(next((out / "studies" / "smoke").glob("*.fp.*/metrics.json")).read_text())
    assert reference["tracking"]["group"] == "smoke" and reference["tracking"]["run_id"] != tracking["run_id"]

    again = run_cli(*args, "logger.log_checkpoints=true", env=env)  # every stage cached now
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((cell / "metrics.json").read_text())
    assert rerun["patch"]["cached"] is True and rerun["tracking"]["run_id"] != tracking["run_id"]
    rerun_dir = Path(rerun["tracking"]["wandb_run_dir"])
    assert wandb_files.exit_code(rerun_dir) == 0
    # the cached patch's training curve, replayed from its history under the same keys
    assert [(r["step"], r["loss"]) for r in wandb_files.series(rerun_dir, TRAIN_SERIES)] == [
        (r["step"], r["loss"]) for r in streamed
    ]
    assert {k: v for k, v in wandb_files.summary(rerun_dir).items() if k.startswith("asr/")} == {
        k: v for k, v in summary.items() if k.startswith("asr/")
    }
    kinds = sorted(
        (a.type, json.loads(a.metadata)["stage"] if a.type == "model" else "")
        for a in wandb_files.artifacts(rerun_dir)
        if a.type != "run_table"
    )
    assert kinds == [("model", "patch"), ("model", "quantize"), ("samples", "")]
    for artifact in wandb_files.artifacts(rerun_dir):
        if artifact.type == "model":  # a file:// reference into the cache, nothing copied
            assert all(e.ref.startswith(shared_cache.resolve().as_uri()) for e in artifact.manifest.contents)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"

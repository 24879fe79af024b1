"""A sweep killed with SIGKILL resumes without redoing finished work; W&B run files are real."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, run_cli


def test_sweep_killed_mid_run_resumes_and_redoes_only_what_is_missing(tmp_path):
    out = tmp_path / "outputs"
    args = ["-m", "debug=smoke", "model=tiny-random-llama", "quant=rtn,gptq", "bits=4,8", f"paths.output_dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "qresafe_exp", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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


def test_wandb_offline_run_files_are_written_without_secrets(tmp_path):
    out = tmp_path / "outputs"
    secret = "sk-test-should-never-be-written-0123456789"
    proc = run_cli("debug=smoke", "model=tiny-random-llama", "logger=wandb", "quant=rtn", "bits=8",
                   f"paths.output_dir={out}",
                   env={"OPENAI_API_KEY": secret, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    cell = out / "studies" / "smoke" / "tiny-random-llama.rtn-w8g64.none"
    metrics = json.loads((cell / "metrics.json").read_text())
    run_dir = Path(metrics["tracking"]["wandb_run_dir"])
    assert run_dir.name.startswith("offline-run-") and run_dir.is_relative_to(cell)
    records = b"".join(p.read_bytes() for p in run_dir.glob("*.wandb"))
    assert b"tiny-random-llama" in records and b"advbench" in records  # config + metrics in the run file
    assert list((run_dir / "files" / "media" / "table").glob("samples_*.table.json"))
    for path in out.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"

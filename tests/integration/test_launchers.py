"""Launchers as config, and sweeps whose cells run in parallel workers over one artifact cache.

The config tests compose qresafe_exp/conf/launcher/{slurm,ray}.yaml (no cluster). The sweep tests run the same
2x2 tiny sweep (quant=rtn,gptq x bits=4,8 on tiny-random-llama, + the FP reference cell) through
submitit_local, joblib (n_jobs=2) and Ray (a head started by the test in a loopback-only network
namespace), each with a fresh cache, and check that the workers shared that cache safely: every
artifact built exactly once (one `[cache miss] building` line per stage/key across all job logs),
the FP reference evaluation built once and served to the other cells, the reference cell written once,
every artifact complete (`_SUCCESS` + spec.json), no temp directory left, the request cache intact.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import CONF, ROOT, run_cli

SWEEP = ("-m", "debug=smoke", "model=tiny-random-llama", "quant=rtn,gptq", "bits=4,8")
STUDY = "smoke"
REFERENCE = "tiny-random-llama.fp.none"
QUANTIZED = [
    "tiny-random-llama.rtn-w4g64.none",
    "tiny-random-llama.rtn-w8g64.none",
    "tiny-random-llama.gptq-w4g64-alpaca.none",
    "tiny-random-llama.gptq-w8g64-alpaca.none",
]
MISS = re.compile(r"\[cache miss\] building (\w+)/([0-9a-f]+)")
HIT = re.compile(r"\[cache hit\] (\w+)/([0-9a-f]+)")
SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"


# ---------------------------------------------------------------- config (composition only)
def compose_with_hydra(overrides: list[str]):
    """The composed config including its `hydra` node (as `--cfg hydra` prints it)."""
    from hydra import compose, initialize_config_dir

    from qresafe_exp.schema import register_configs

    register_configs()
    # ~local: a developer's git-ignored qresafe_exp/conf/local/default.yaml must not change what is asserted
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*overrides, "~local"], return_hydra_config=True)


@pytest.mark.parametrize("quant", ["gptq", "awq"])
@pytest.mark.parametrize("bits", [4, 8])
def test_slurm_launcher_composes_every_cell_of_the_sweep(quant, bits):
    # the cells of `-m launcher=slurm hydra.launcher.partition=gpu quant=gptq,awq bits=4,8`
    cfg = compose_with_hydra(["launcher=slurm", "hydra.launcher.partition=gpu", f"quant={quant}", f"bits={bits}"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SUBMITIT_SLURM
    assert launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.timeout_min == 240 and launcher.array_parallelism == 16
    assert launcher.cpus_per_task == 8 and launcher.mem_gb == 64 and launcher.nodes == 1
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "submitit_slurm"
    assert cfg.quant.name == quant and cfg.quant.bits == bits


def test_slurm_launcher_settings_are_config():
    default = compose_with_hydra(["launcher=slurm"]).hydra.launcher
    assert default.partition is None and default.account is None  # the cluster's default partition
    cfg = compose_with_hydra(
        [
            "launcher=slurm",
            "hydra.launcher.partition=long",
            "hydra.launcher.account=proj",
            "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.timeout_min=30",
            "hydra.launcher.array_parallelism=4",
        ]
    ).hydra.launcher
    assert (cfg.partition, cfg.account, cfg.gpus_per_node, cfg.timeout_min, cfg.array_parallelism) == (
        "long",
        "proj",
        2,
        30,
        4,
    )


def test_slurm_launcher_cfg_hydra_on_the_command_line():
    # Hydra 1.3 refuses `-m` together with `--cfg`, so one cell of the sweep is printed
    proc = run_cli(
        "launcher=slurm", "hydra.launcher.partition=gpu", "quant=gptq", "bits=4", "--cfg", "hydra", timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from omegaconf import OmegaConf

    launcher = OmegaConf.create(proc.stdout).hydra.launcher
    assert launcher._target_ == SUBMITIT_SLURM and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.timeout_min == 240 and launcher.array_parallelism == 16


def test_ray_launcher_config(monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the `ray` extra is not installed")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = compose_with_hydra(["launcher=ray"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == RAY_LAUNCHER
    assert launcher.ray.init.address == "auto"
    assert launcher.ray.remote.num_cpus == 1 and launcher.ray.remote.num_gpus == 0
    # the plugin does init.setdefault("object_store_memory", 75 MiB), which Ray refuses when joining a
    # running cluster; the key is present (null) in the config, so the default is never applied
    init = launcher.ray.init
    assert "object_store_memory" in init and init.object_store_memory is None
    init.setdefault("object_store_memory", 78643200)
    assert init.object_store_memory is None

    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    cfg = compose_with_hydra(
        ["launcher=ray", "hydra.launcher.ray.remote.num_gpus=1", "hydra.launcher.ray.remote.num_cpus=4"]
    )
    assert cfg.hydra.launcher.ray.init.address == "10.1.2.3:6379"
    assert cfg.hydra.launcher.ray.remote.num_gpus == 1 and cfg.hydra.launcher.ray.remote.num_cpus == 4
    cfg = compose_with_hydra(["launcher=ray", "hydra.launcher.ray.init.address=127.0.0.1:6399"])
    assert cfg.hydra.launcher.ray.init.address == "127.0.0.1:6399"


# ---------------------------------------------------------------- sweeps over a shared cache
def load_metrics(out: Path, cell: str) -> dict:
    return json.loads((out / "studies" / STUDY / cell / "metrics.json").read_text())


def job_logs(out: Path) -> list[Path]:
    """Hydra's per-job log file (<cell>/__main__.log): written by every launcher, one per job."""
    logs = [log for cell in QUANTIZED for log in (out / "studies" / STUDY / cell).glob("*.log")]
    assert len(logs) == len(QUANTIZED), logs
    return logs


def check_shared_cache(out: Path, logs: list[Path]) -> None:
    study = out / "studies" / STUDY
    cache = out / "cache"
    # every cell, the FP reference included, has its results
    for cell in [REFERENCE, *QUANTIZED]:
        metrics = load_metrics(out, cell)
        assert metrics["cell"] == cell
        assert metrics["scores"]["advbench"]["asr"]["n"] == 4
        assert metrics["scores"]["xstest_safe"]["refusal_rate"]["n"] == 4
        assert len((study / cell / "samples.jsonl").read_text().splitlines()) == 12
    summary = (study / "summary.md").read_text()
    assert all(cell in summary for cell in [REFERENCE, *QUANTIZED])
    reference_eval = load_metrics(out, REFERENCE)["artifacts"]["eval"]
    for cell in QUANTIZED:
        assert load_metrics(out, cell)["artifacts"]["reference_eval"] == reference_eval

    texts = [log.read_text() for log in logs]
    builds = Counter(m.groups() for text in texts for m in MISS.finditer(text))
    hits = Counter(m.groups() for text in texts for m in HIT.finditer(text))
    # the FP reference evaluation: built by one worker, served from the cache to the three others
    assert builds[("eval", reference_eval)] == 1, builds
    assert builds[("eval", reference_eval)] + hits[("eval", reference_eval)] == len(QUANTIZED)
    assert sum(text.count("wrote FP reference cell") for text in texts) == 1
    # no artifact built twice, and every published artifact was built (and logged) exactly once
    assert [key for key, n in builds.items() if n > 1] == []
    published = set()
    for stage_dir in (p for p in cache.iterdir() if p.is_dir()):
        for art in stage_dir.iterdir():
            if art.name.startswith("."):
                continue
            assert (art / "_SUCCESS").is_file(), art
            assert json.loads((art / "spec.json").read_text())["stage"] == stage_dir.name
            published.add((stage_dir.name, art.name))
    assert set(builds) == published
    counts = Counter(stage for stage, _ in published)
    assert (counts["model"], counts["quantize"], counts["eval"]) == (1, 4, 5)  # 4 cells + one FP eval
    # no torn or abandoned builds: no temp dir in the cache, no temp file in the study
    assert list(cache.rglob(".tmp-*")) == []
    assert [p for p in study.rglob("*.tmp*") if "wandb" not in p.parts] == []
    with sqlite3.connect(cache / "requests.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] > 0


@pytest.mark.slow  # 52 s here: `make test-full` (the launcher configs above stay in the default run)
@pytest.mark.timeout(900)
def test_submitit_local_sweep_shares_the_cache(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli(*SWEEP, "launcher=submitit_local", f"paths.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_shared_cache(out, job_logs(out))
    # submitit's own per-job logs tell the same story
    submitit = out / "studies" / STUDY / ".submitit"
    assert len(list(submitit.rglob("*_result.pkl"))) == len(QUANTIZED)
    reference_eval = load_metrics(out, REFERENCE)["artifacts"]["eval"]
    outs = [p.read_text() for p in submitit.rglob("*_log.out")]
    assert len(outs) == len(QUANTIZED)
    assert sum(f"[cache miss] building eval/{reference_eval}" in text for text in outs) == 1


@pytest.mark.slow  # 30 s here: `make test-full`
@pytest.mark.timeout(900)
def test_joblib_sweep_shares_the_cache(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli(*SWEEP, "launcher=joblib", f"paths.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    check_shared_cache(out, job_logs(out))


# Ray binds its node address to the machine's outward interface; in a network namespace that has only
# loopback it uses 127.0.0.1 and no test traffic leaves the machine. The PID namespace (--mount-proc:
# `ray stop` sees only this cluster's processes) dies with its first process, so the cluster is gone
# when the command ends, fails or is killed (--kill-child: also when the test's timeout kills unshare).
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
RAY_PORT = 6379  # a fresh network namespace has its own, empty port space: this port is free there
RAY_SCRIPT = r"""
ip link set lo up || exit 91
"$RAY" start --head --port="$RAY_PORT" --num-cpus=2 --include-dashboard=false --disable-usage-stats \
    --temp-dir="$RAY_TMP" --object-store-memory=150000000 >"$RAY_TMP/start.log" 2>&1 \
    || { cat "$RAY_TMP/start.log" >&2; exit 92; }
"$PY" -m qresafe_exp "$@" hydra.launcher.ray.init.address="127.0.0.1:$RAY_PORT"
rc=$?
"$RAY" stop --force >"$RAY_TMP/stop.log" 2>&1
exit $rc
"""


def namespace_prefix() -> list[str]:
    """unshare's command prefix, as root or in a user namespace; skips where neither is allowed."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("`unshare` or `ip` is not installed: no loopback-only network namespace for the Ray head")
    errors = []
    for prefix in (NAMESPACE, [NAMESPACE[0], "--map-root-user", *NAMESPACE[1:]]):
        probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
        if probe.returncode == 0:
            return prefix
        errors.append(probe.stderr.strip())
    pytest.skip(f"`unshare -n` is not permitted here ({'; '.join(errors)})")


@pytest.mark.timeout(900)
def test_ray_sweep_on_a_local_cluster_shares_the_cache(tmp_path):
    ray_bin = Path(sys.executable).parent / "ray"
    if (
        importlib.util.find_spec("ray") is None
        or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None
        or not ray_bin.exists()
    ):
        pytest.skip("ray / hydra-ray-launcher is not installed (pip install -e '.[ray]')")
    prefix = namespace_prefix()
    out = tmp_path / "outputs"
    # Ray's unix sockets live under --temp-dir and must stay under 107 characters: short dir in /tmp
    ray_tmp = Path(tempfile.mkdtemp(prefix="qr-ray-"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        PYTHONUNBUFFERED="1",
        RAY_USAGE_STATS_ENABLED="0",
        PY=sys.executable,
        RAY=str(ray_bin),
        RAY_TMP=str(ray_tmp),
        RAY_PORT=str(RAY_PORT),
    )
    try:
        proc = subprocess.run(
            [*prefix, "bash", "-c", RAY_SCRIPT, "bash", *SWEEP, "launcher=ray", f"paths.output_dir={out}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "Ray Launcher is launching 4 jobs" in proc.stdout + proc.stderr
    assert "Connected to Ray cluster" in proc.stdout + proc.stderr
    check_shared_cache(out, job_logs(out))

"""Shared fixtures. Tests run offline: datasets from QRESAFE_DATA_DIR (default ../shared/data),
no hub access, W&B offline. A session-wide artifact cache holds the tiny model, so it is built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qresafe_exp.conf import CONF_DIR as CONF

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("QRESAFE_DATA_DIR", str((ROOT.parent / "shared" / "data").resolve()))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs a worker per core: each worker, and every app it starts, gets its share of the cores
    # (torch's default, a thread per core in every worker, oversubscribes them); set before torch is imported
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(_share))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["QRESAFE_DATA_DIR"])
    if not path.is_dir():
        pytest.fail(f"QRESAFE_DATA_DIR={path} does not exist: point it at a copy of shared/data")
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One artifact cache for the whole session (tiny model + tokenizer built once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_cfg(tmp_path, shared_cache):
    """compose(overrides) -> a resolved-able config, outputs in tmp_path, the session cache."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from qresafe_exp.schema import register_configs

    register_configs()

    def _compose(overrides=(), cache=True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            extra = [f"paths.output_dir={tmp_path / 'outputs'}"]
            if cache:
                extra.append(f"paths.cache_dir={shared_cache}")
            cfg = compose("config", overrides=[*overrides, *extra], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):  # the task function never sees the hydra node either
            del cfg["hydra"]
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m qresafe_exp ARGS` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "qresafe_exp", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def endpoint():
    """``endpoint(script)`` starts a scripted OpenAI-compatible server (tests/judge_servers.py), closed after."""
    from tests.judge_servers import ScriptedEndpoint

    servers = []

    def start(script):
        servers.append(ScriptedEndpoint(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()

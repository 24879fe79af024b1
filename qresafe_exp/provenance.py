"""What travels with every result: code version, library versions, time, and how the process was
seeded and made deterministic (seed_everything), with the facts that still make float results differ
between machines (torch version, threads, CPU instruction set, GPU)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import random
import subprocess
from functools import lru_cache
from pathlib import Path

_PACKAGES = (
    "torch",
    "transformers",
    "llmcompressor",
    "compressed-tensors",
    "hydra-core",
    "omegaconf",
    "wandb",
    "accelerate",
    "peft",
    "datasets",
    "numpy",
)


@lru_cache(maxsize=1)
def git_state(root: str) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit or "unknown", "dirty": dirty if commit else None}


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# What seed_everything last set in this process (seed, deterministic, device), for determinism().
_SEEDED: dict = {}
CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS needs a fixed workspace for reproducible GEMMs (CUDA >= 10.2)


def seed_everything(seed: int, deterministic: bool | None = True, device=None) -> dict:
    """Seed python, numpy and torch (every device). ``deterministic`` True/False turns torch's
    deterministic algorithms on/off (warn_only: an op without a deterministic kernel warns instead of
    failing the cell); None leaves them as the cell set them (a build stage re-seeding itself).
    Returns determinism()."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds CUDA too
    if deterministic is not None:
        if deterministic:
            # read when cuBLAS creates its handle: effective when set before the cell's first CUDA matmul
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
        torch.backends.cudnn.deterministic = bool(deterministic)
        torch.backends.cudnn.benchmark = False
        # deterministic mode would also fill every torch.empty with NaN: a cost on each allocation
        # that only matters for code reading uninitialised memory (a bug either way)
        torch.utils.deterministic.fill_uninitialized_memory = False
        _SEEDED["deterministic"] = bool(deterministic)
    _SEEDED["seed"] = seed
    if device is not None:
        _SEEDED["device"] = str(device)
    return determinism()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def determinism() -> dict:
    """What this process runs with: the seed and flags set, and what can still change float results
    between machines (torch build, thread count, the CPU kernels' instruction set, the GPU)."""
    import torch

    facts = {
        "seed": _SEEDED.get("seed"),
        "deterministic": _SEEDED.get("deterministic"),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": _cpu_model(),
        "device": _SEEDED.get("device"),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }
    device = torch.device(facts["device"]) if facts["device"] else None
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        facts["cuda"] = {
            "version": torch.version.cuda,
            "device_name": torch.cuda.get_device_name(index),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        }
    return facts


def provenance(root: str | Path) -> dict:
    return {
        "git": git_state(str(root)),
        "versions": library_versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "determinism": determinism(),
    }

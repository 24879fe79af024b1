"""What travels with every result: code version, library versions, time."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

_PACKAGES = ("torch", "transformers", "llmcompressor", "compressed-tensors", "hydra-core", "omegaconf",
             "wandb", "accelerate", "peft", "datasets", "numpy")


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


def provenance(root: str | Path) -> dict:
    return {"git": git_state(str(root)), "versions": library_versions(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node()}

"""What every format's merge-and-write shares: linking the files a merge leaves alone, rewriting the
weight shards, and measuring how much of a patch survived re-quantization."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def link_checkpoint(src: Path, out: Path, skip=lambda name: False) -> None:
    """Hard-link (copy where links fail) every file of ``src`` into ``out``: a read-only view, no space."""
    out.mkdir(parents=True, exist_ok=True)
    for item in Path(src).iterdir():
        if item.is_file() and not skip(item.name):
            try:
                os.link(item, out / item.name)
            except OSError:
                shutil.copy2(item, out / item.name)


def _is_shard(name: str) -> bool:
    return name.startswith("model") and name.endswith(".safetensors")


def rewrite_shards(src: Path, out: Path, edit) -> None:
    """Link every non-weight file of ``src`` into ``out`` and write each weight shard after ``edit(tensors)``
    changed it in place: the one copy path of every format."""
    from safetensors.torch import load_file, save_file

    link_checkpoint(src, out, skip=_is_shard)
    for shard in sorted(src.glob("model*.safetensors")):
        tensors = load_file(str(shard))
        edit(tensors)
        save_file(tensors, str(out / shard.name), metadata={"format": "pt"})


def realized(stats: list[tuple[float, float, float, int, int]]) -> dict:
    """Sum per-layer (|delta|^2, |realized|^2, <delta, realized>, changed entries, entries)."""
    d2 = sum(s[0] for s in stats)
    r2 = sum(s[1] for s in stats)
    dot = sum(s[2] for s in stats)
    changed, total = sum(s[3] for s in stats), sum(s[4] for s in stats)
    return {
        "delta_norm": round(d2**0.5, 6),
        "realized_norm": round(r2**0.5, 6),
        # the share of the patch that survived re-quantization (projection of realized on delta)
        "realized_fraction": round(dot / d2, 4) if d2 else None,
        "changed_entries": changed,
        "patched_entries": total,
        "changed_fraction": round(changed / total, 6) if total else 0.0,
    }


def layer_stats(delta: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> tuple:
    realized_delta = after.float().cpu() - before.float().cpu()
    delta = delta.float().cpu()
    return (
        delta.pow(2).sum().item(),
        realized_delta.pow(2).sum().item(),
        (delta * realized_delta).sum().item(),
        int((realized_delta != 0).sum().item()),
        realized_delta.numel(),
    )

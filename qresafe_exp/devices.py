"""Device and dtype choice: by device, not by habit (these CPUs have no bf16 units)."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={requested} was requested but no CUDA device is available; use device=cpu")
    return device


def compute_dtype(device: torch.device) -> torch.dtype:
    # fp32 on CPU: a 2048^2 matmul ran ~500x slower in bf16 than fp32 on these AVX2 CPUs.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32

"""Device and dtype choice: by measured capability, not by habit (the project's CPUs differ: some have
no bf16 units, others run a bf16 matmul 2.6x faster than fp32)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# CPU flags of native bf16 matmul (AVX512-BF16 dot products, AMX tiles)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
AUTOCAST_CHOICES = (None, "bf16", "auto")
# engine.dtype: null = the device's default (compute_dtype), auto = bf16 where the device has native bf16
ENGINE_DTYPES = (None, "auto", "fp32", "bf16")


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


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's flags as Linux lists them; empty where unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    return frozenset(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True where the CPU advertises a native bf16 matmul (Linux flags); False where unknown."""
    return any(flag in cpu_flags(cpuinfo) for flag in BF16_CPU_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True where the CPU has AMX tiles (amx_int8), where llama.cpp's extra CPU buffer types crash
    (llamacpp.repacking_off_on_amx); False where unknown."""
    return "amx_int8" in cpu_flags(cpuinfo)


def autocast_dtype(setting: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``setting`` (None/'bf16'/'auto') on ``device``; None = plain fp32."""
    if setting not in AUTOCAST_CHOICES:
        raise ValueError(f"autocast={setting!r} is unknown. Allowed: null (fp32), bf16, auto")
    if setting is None:
        return None
    if setting == "bf16":
        return torch.bfloat16
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    return torch.bfloat16 if native else None


def engine_dtype(setting: str | None, device: torch.device) -> torch.dtype:
    """The dtype generation runs in for ``engine.dtype`` on ``device``."""
    if setting not in ENGINE_DTYPES:
        raise ValueError(
            f"engine.dtype={setting!r} is unknown. Allowed: null (the device's default: fp32 on "
            f"CPU, bf16 on CUDA), auto (bf16 where the device has native bf16), fp32, bf16"
        )
    if setting == "fp32":
        return torch.float32
    if setting == "bf16":
        return torch.bfloat16
    if setting == "auto" and autocast_dtype("auto", device) is not None:
        return torch.bfloat16
    return compute_dtype(device)

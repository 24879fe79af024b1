"""Benchmark: choosing a top-tau mask of one Llama-2-7B-shaped matrix, topk (the form before) vs selection.

    python bench/snip_select.py [--tau 0.6] [--repeats 3] [--out bench/results/snip_select.json]

A Q-resafe mask selection ranks every entry of the 224 adapted matrices of a 7B model (7 per layer, up to
45 M entries each). On a lent H200 a 7B-width model of 4 layers spent 74 s of its 78 s patch in two SNIP
selections, the scores ranked on the CPU by ``torch.topk`` with k = 0.6 n (bench/gpu_full_dpo_cost.py,
bench/results/gpu_full_dpo_cost_4l.json). This times both ways of taking the top ceil(tau n) entries on
this machine, for the MLP (11008 x 4096) and attention (4096 x 4096) shapes, and checks that both keep
exactly k entries none scored below an entry left out (fp32 uniform scores tie at 45 M entries, and the
two break ties differently). A benchmark, not a test: nothing asserts a speed; ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qresafe_exp.patch.snip import _top_k_mask  # noqa: E402

SHAPES = {"mlp (11008 x 4096)": (11008, 4096), "attention (4096 x 4096)": (4096, 4096)}


def topk_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The form before: topk's indices of the k largest (its cost grows with k)."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask


def is_top_k(flat: torch.Tensor, mask: torch.Tensor, k: int) -> bool:
    return int(mask.sum()) == k and bool(flat[mask].min() >= flat[~mask].max())


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tau", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "snip_select.json"))
    args = parser.parse_args()
    rows = []
    for label, shape in SHAPES.items():
        flat = torch.rand(shape, generator=torch.Generator().manual_seed(0)).flatten()
        k = math.ceil(args.tau * flat.numel())
        before, after, valid = [], [], True
        for _ in range(args.repeats):  # interleaved, so a noisy machine slows both alike
            seconds, old = timed(topk_mask, flat, k)
            before.append(seconds)
            seconds, new = timed(_top_k_mask, flat, k)
            after.append(seconds)
            valid = valid and all(is_top_k(flat, m, k) for m in (old, new))
        row = {
            "matrix": label,
            "entries": flat.numel(),
            "k": k,
            "topk_s": round(statistics.median(before), 3),
            "select_s": round(statistics.median(after), 3),
            "both_exact_top_k": valid,
        }
        row["select_vs_topk"] = round(row["select_s"] / row["topk_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    # a 7B model has 32 x (3 MLP + 4 attention) adapted matrices: one selection's ranking, both ways
    per_layer = {key: 3 * rows[0][key] + 4 * rows[1][key] for key in ("topk_s", "select_s")}
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tau": args.tau,
        "repeats": args.repeats,
        "matrices": rows,
        "one_selection_7b_s": {key: round(32 * value, 1) for key, value in per_layer.items()},
        "note": "medians of interleaved repeats; one_selection_7b_s = 32 x (3 MLP + 4 attention), computed",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["one_selection_7b_s"]))


if __name__ == "__main__":
    main()

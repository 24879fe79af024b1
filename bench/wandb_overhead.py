"""Benchmark: what a cell's W&B run costs (offline): opening the run, one streamed training step, closing.

    WANDB_MODE=offline python bench/wandb_overhead.py              # 1000 steps, 3 repeats
    WANDB_MODE=offline python bench/wandb_overhead.py --steps 5000 --repeats 5

Each step is a patch-training row as train_patch hands it to the tracker (loss, lr, DPO margin, reward
accuracy, chosen NLL; a mask re-selection every 100 steps). A run file in a temporary directory per repeat.
A benchmark, not a test: nothing asserts a speed. Writes bench/results/wandb_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from qresafe_exp.tracking import WandbTracker


def one_run(steps: int) -> dict:
    tracker = WandbTracker(OmegaConf.create({"project": "bench", "entity": None, "mode": "offline", "tags": []}))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        tracker.start(run_dir=Path(tmp), name="bench", group="bench", job_type="cell", config={}, tags=[])
        opened = time.perf_counter()
        for step in range(steps):
            row = {
                "step": step,
                "epoch": 0,
                "loss": 0.5,
                "lr": 1e-5,
                "dpo_margin": 0.1,
                "reward_accuracy": 0.5,
                "chosen_nll": 2.0,
            }
            if step and step % 100 == 0:
                row["mask_reselected"] = True
            tracker.log_step("patch/train/history", row)
        logged = time.perf_counter()
        tracker.finish()
        return {
            "init_s": opened - started,
            "step_ms": (logged - opened) / steps * 1e3,
            "finish_s": time.perf_counter() - logged,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.steps) for _ in range(args.repeats)]
    result = {
        "steps": args.steps,
        "repeats": args.repeats,
        **{f"{k}_median": round(statistics.median(r[k] for r in runs), 4) for k in runs[0]},
        "runs": runs,
    }
    out = Path(__file__).parent / "results" / "wandb_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"open {result['init_s_median']:.2f} s, {result['step_ms_median']:.3f} ms per streamed step, "
        f"close {result['finish_s_median']:.2f} s (medians of {args.repeats} runs, {args.steps} steps each) -> {out}"
    )


if __name__ == "__main__":
    main()

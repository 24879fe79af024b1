"""Benchmark: one study run cold (empty output dir and cache) then warm (served from the cache), in one
go, and the peak memory of every pipeline stage in the cold run.

    python bench/sweep_cache.py                                   # make bench's sweep (smollm2-135m)
    python bench/sweep_cache.py -- quant=gptq,awq bits=4,8        # the spine sweep (~18 min cold here)
    python bench/sweep_cache.py -- debug=smoke quant=gptq,awq bits=4,8   # on tiny-talkative

Prints wall times, their ratio and a stage x cell table of peak resident memory (and CUDA peak where
there is a GPU), read from each cell's metrics.json (`resources`, recorded by the pipeline per stage);
writes them as JSON (bench/results/) so commits can be compared. A benchmark: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP = ["quant=rtn,gptq", "bits=4", "eval.limit=16", "logger=none"]
STAGES = ("model", "reference_eval", "quantize", "patch", "eval", "variant_eval")


def run(args: list[str], env: dict, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.run(
            [sys.executable, "-m", "qresafe_exp", *args], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}); see {log}")
    return time.perf_counter() - started


def stage_memory(study_dir: Path) -> dict[str, dict]:
    """cell -> stage -> {seconds, peak_rss_mb[, cuda_peak_mb]} from the cells' metrics.json."""
    cells = {}
    for path in sorted(study_dir.glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        if "resources" in metrics:
            cells[metrics["cell"]] = metrics["resources"]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", help="empty dir for the study (default: a new temp dir)")
    parser.add_argument("--result", default=str(ROOT / "bench" / "results" / "sweep_cache.json"))
    parser.add_argument("overrides", nargs="*", help=f"Hydra overrides after -- (default: {' '.join(DEFAULT_SWEEP)})")
    opts = parser.parse_args()
    out = Path(opts.output_dir or tempfile.mkdtemp(prefix="qresafe-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    sweep = ["-m", "study=bench_cache", *(opts.overrides or DEFAULT_SWEEP)]
    env = {**os.environ, "QRESAFE_OUTPUT_DIR": str(out / "outputs"), "PYTHONUNBUFFERED": "1"}
    cold = run(sweep, env, out / "cold.log")
    memory = stage_memory(out / "outputs" / "studies" / "bench_cache")
    warm = run(sweep, env, out / "warm.log")
    result = {
        "benchmark": "sweep_cache",
        "sweep": sweep,
        "cold_seconds": round(cold, 1),
        "warm_seconds": round(warm, 1),
        "cold_over_warm": round(cold / warm, 1),
        "stage_memory_cold": memory,
        "output_dir": str(out),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    Path(opts.result).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.result).write_text(json.dumps(result, indent=2) + "\n")
    print(f"sweep: {' '.join(sweep)}")
    print(f"| run  | wall (s) |\n|------|----------|\n| cold | {cold:8.1f} |\n| warm | {warm:8.1f} |")
    print(f"cold/warm = {cold / warm:.1f}x\n")
    stages = [s for s in STAGES if any(s in r for r in memory.values())]
    print("peak resident memory per stage in the cold run, MB (seconds):")
    print("| cell | " + " | ".join(stages) + " |\n|---|" + "---|" * len(stages))
    for cell, record in memory.items():
        cols = [
            f"{record[s]['peak_rss_mb']:.0f} ({record[s]['seconds']:.0f} s)" if s in record else "-" for s in stages
        ]
        if any("cuda_peak_mb" in record.get(s, {}) for s in stages):
            cols = [
                c + (f", CUDA {record[s]['cuda_peak_mb']:.0f}" if "cuda_peak_mb" in record.get(s, {}) else "")
                for c, s in zip(cols, stages)
            ]
        print(f"| {cell} | " + " | ".join(cols) + " |")
    print(f"({opts.result})")


if __name__ == "__main__":
    main()

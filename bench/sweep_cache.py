"""Benchmark: one study run cold (empty output dir) then warm (served from the cache), in one go.

    python bench/sweep_cache.py                       # the spine sweep on smollm2-135m
    python bench/sweep_cache.py -- debug=smoke        # the same on tiny-random-llama

Prints the wall times and their ratio and writes them as JSON (bench/results/), so commits can be
compared. A benchmark, not a test: nothing here asserts a speed.
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


def run(args: list[str], env: dict, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.run([sys.executable, "-m", "qresafe_exp", *args], cwd=ROOT, env=env,
                              stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}); see {log}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", help="empty dir for the study (default: a new temp dir)")
    parser.add_argument("--result", default=str(ROOT / "bench" / "results" / "sweep_cache.json"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides after --")
    opts = parser.parse_args()
    out = Path(opts.output_dir or tempfile.mkdtemp(prefix="qresafe-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    sweep = ["-m", "quant=gptq,awq", "bits=4,8", "study=bench_cache", *opts.overrides]
    env = {**os.environ, "QRESAFE_OUTPUT_DIR": str(out / "outputs"), "PYTHONUNBUFFERED": "1"}
    cold = run(sweep, env, out / "cold.log")
    warm = run(sweep, env, out / "warm.log")
    result = {"sweep": sweep, "cold_seconds": round(cold, 1), "warm_seconds": round(warm, 1),
              "cold_over_warm": round(cold / warm, 1), "output_dir": str(out),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(opts.result).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.result).write_text(json.dumps(result, indent=2) + "\n")
    print(f"| run  | wall (s) |\n|------|----------|\n| cold | {cold:8.1f} |\n| warm | {warm:8.1f} |")
    print(f"cold/warm = {cold / warm:.1f}x   ({opts.result})")


if __name__ == "__main__":
    main()

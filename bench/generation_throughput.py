"""Benchmark: the project's generation engine against a plain per-prompt ``model.generate`` loop.

    python bench/generation_throughput.py                        # smollm2-135m, 64 AdvBench prompts, 128 tokens
    python bench/generation_throughput.py --prompts 128 --batch-size 64
    python bench/generation_throughput.py --device cuda --modes loop,generate,compact,static,static-compile

Same model, prompts and max_new_tokens for every mode, in one run, greedy:
  loop            one prompt at a time through model.generate (the baseline)
  generate        the same prompts sorted by length, batch_size at a time through model.generate
  compact         the engine's default (engine.decode=compact): batched, finished rows leave the batch
  compact-copying the same loop over transformers' DynamicCache and SDPA (the KV cache concatenated
                  each step, grouped KV heads repeated under a padding mask): the engine before
                  qresafe_exp/engines/decode_kernels.py, for an A/B in one run
  static          model.generate with a static KV cache (GPU)
  static-compile  the same with torch.compile (GPU)
  compact-bf16    compact with the model in bf16 (engine.dtype=bf16; what engine.dtype=auto picks on a
                  CPU with native bf16): identical-to-loop is its greedy agreement with fp32
Reports seconds, new tokens/s, the ratio to the loop, the share of responses identical to the loop's,
and the useful model FLOP/s (2 x linear params x tokens + attention + the LM head on new tokens,
counted once per real token: padding and finished rows are waste) as a fraction of this device's
matmul peak, measured in the same run (2048^2 fp32 on CPU, bf16 on CUDA). Compute is fp32 on CPU.
A benchmark, not a test: nothing asserts a speed. Writes JSON (bench/results/) for comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from random_models import save_random_smollm2  # noqa: E402  (bench/, this script's directory)

from qresafe_exp.devices import compute_dtype, resolve_device  # noqa: E402
from qresafe_exp.engines.hf import HFEngine  # noqa: E402
from qresafe_exp.generate import GenerationSpec, render_chat  # noqa: E402

MODES = {
    "loop": None,
    "generate": dict(decode="generate"),
    "compact": dict(decode="compact"),
    "compact-copying": dict(decode="compact"),
    "static": dict(decode="generate", cache_implementation="static"),
    "static-compile": dict(decode="generate", cache_implementation="static", compile=True),
    "compact-bf16": dict(decode="compact"),
}


class CopyingCompact(HFEngine):
    """The compact loop without engines/decode_kernels.py: DynamicCache and transformers' own SDPA."""

    def _compact_decode(self, enc, spec, generator):
        from unittest import mock

        from transformers import DynamicCache

        import qresafe_exp.engines.hf as hf

        with mock.patch.object(hf, "reserved_cache", lambda config, reserve: DynamicCache(config=config)):
            return self._compact_loop(enc, spec, generator)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        started = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_model(name: str) -> str:
    """The FP checkpoint directory of a model config (built into the artifact cache if missing)."""
    from hydra import compose, initialize_config_dir

    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.conf import CONF_DIR
    from qresafe_exp.models import materialize
    from qresafe_exp.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}"])
    return materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths).path


def advbench_prompts(n: int) -> list[str]:
    import csv

    data = Path(os.environ.get("QRESAFE_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data / "advbench").is_dir():  # e.g. a lent GPU machine without the data: varied stand-ins
        return [f"Question {i}: explain topic number {i} in {3 + i % 7} sentences." for i in range(n)]
    with open(data / "advbench" / "harmful_behaviors.csv") as handle:
        goals = [row["goal"] for row in csv.DictReader(handle)]
    if n > len(goals):
        raise SystemExit(f"--prompts {n}: AdvBench has {len(goals)}")
    return goals[:n]


def useful_gflop(model, prompt_lens: list[int], new_lens: list[int]) -> float:
    """Model FLOPs of the real tokens: linear layers on every token, attention over the context,
    the LM head on generated tokens only (the prompt's logits are not computed)."""
    cfg = model.config
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    linear = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2) - embed.numel()
    if head.data_ptr() != embed.data_ptr():
        linear -= head.numel()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn_width = cfg.num_attention_heads * head_dim
    total = 0.0
    for lp, lg in zip(prompt_lens, new_lens):
        tokens = lp + lg
        total += 2 * linear * tokens + 2 * head.numel() * lg
        total += 4 * cfg.num_hidden_layers * attn_width * tokens * (tokens + 1) / 2
    return total / 1e9


@torch.inference_mode()
def per_prompt_loop(model, tok, texts: list[str], spec: GenerationSpec) -> tuple[list[str], list[int]]:
    outputs, new_lens = [], []
    eos = tok.eos_token_id
    for text in texts:
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        out = model.generate(
            **enc, max_new_tokens=spec.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos
        )
        new = out[0, enc["input_ids"].shape[1] :].tolist()
        new_lens.append(len(new))  # includes the EOS it stopped on: that token was computed too
        cut = new.index(eos) if eos in new else len(new)
        outputs.append(tok.decode(new[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=False).strip())
    return outputs, new_lens


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="smollm2-135m", help="a qresafe_exp/conf/model name (materialized if needed)"
    )
    parser.add_argument("--model-dir", help="a checkpoint directory instead of --model")
    parser.add_argument(
        "--random-smollm2",
        metavar="TOKENIZER_DIR",
        help="a random model of SmolLM2-135M's shape with this tokenizer (no weights needed)",
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", default="32", help="one size, or several (32,64): each batched mode at each")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", default="loop,generate,compact")
    parser.add_argument("--result", default=str(ROOT / "bench" / "results" / "generation_throughput.json"))
    opts = parser.parse_args()
    modes = opts.modes.split(",")
    if modes[0] != "loop" or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes must start with loop and be among {', '.join(MODES)}")

    from qresafe_exp.models import load_model, load_tokenizer

    device = resolve_device(opts.device)
    dtype = compute_dtype(device)
    if opts.random_smollm2:
        import tempfile

        opts.model_dir = str(save_random_smollm2(opts.random_smollm2, tempfile.mkdtemp(prefix="random-smollm2-")))
        opts.model = "random SmolLM2-135M shape"
    path = opts.model_dir or resolve_model(opts.model)
    tok = load_tokenizer(path)
    model = load_model(path, device)
    texts = [render_chat(tok, p, None) for p in advbench_prompts(opts.prompts)]
    prompt_lens = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    spec = GenerationSpec(max_new_tokens=opts.max_new_tokens)
    peak = matmul_peak_gflops(device, dtype)
    peaks = {dtype: peak}
    if any(m.endswith("-bf16") for m in modes):
        peaks[torch.bfloat16] = matmul_peak_gflops(device, torch.bfloat16)
    print(
        f"{opts.model_dir or opts.model} on {device} ({dtype}), {torch.get_num_threads()} threads; "
        f"{len(texts)} prompts, {spec.max_new_tokens} new tokens; matmul peak {peak:.1f} GFLOP/s"
        + (f", bf16 {peaks[torch.bfloat16]:.1f}" if torch.bfloat16 in peaks and dtype != torch.bfloat16 else ""),
        flush=True,
    )

    from qresafe_exp.judges.refusal_rules import classify_refusal

    sizes = [int(b) for b in str(opts.batch_size).split(",")]
    runs = [(m, 1) if m == "loop" else (m, b) for m in modes for b in ([1] if m == "loop" else sizes)]
    rows, baseline, work, base_refused = [], None, None, None
    for mode, batch_size in runs:
        sync(device)
        started = time.perf_counter()
        if mode == "loop":
            outputs, new_lens = per_prompt_loop(model, tok, texts, spec)
        else:
            run_dtype = torch.bfloat16 if mode.endswith("-bf16") else dtype
            if run_dtype != dtype:
                sync(device)
                converted = load_model(path, device, dtype=run_dtype)
                started = time.perf_counter()  # loading is not generation
            engine_class = CopyingCompact if mode == "compact-copying" else HFEngine
            engine = engine_class(converted if run_dtype != dtype else model, tok, batch_size=batch_size, **MODES[mode])
            outputs = engine.generate(texts, spec, desc=mode)
        sync(device)
        seconds = time.perf_counter() - started
        if mode == "loop":
            baseline, work = outputs, useful_gflop(model, prompt_lens, new_lens)
            new_tokens = sum(new_lens)
            base_refused = [classify_refusal(o).refused for o in outputs]
        mode_peak = peaks[torch.bfloat16 if mode.endswith("-bf16") else dtype]
        refused = [classify_refusal(o).refused for o in outputs]
        row = {
            "mode": mode,
            "batch_size": batch_size,
            "seconds": round(seconds, 2),
            "new_tokens": new_tokens,
            "tokens_per_s": round(new_tokens / seconds, 1),
            "speedup_vs_loop": round(rows[0]["seconds"] / seconds, 2) if rows else 1.0,
            "identical_to_loop": sum(a == b for a, b in zip(outputs, baseline)),
            # what a changed answer does to a verdict: the `refusal` rules on both answers to each prompt
            "refusal_verdict_same_as_loop": sum(a == b for a, b in zip(refused, base_refused)),
            "refused": sum(refused),
            "shared_prefix_chars": round(
                sum(len(os.path.commonprefix([a, b])) for a, b in zip(outputs, baseline))
                / max(1, sum(len(b) for b in baseline)),
                4,
            ),
            "useful_gflops": round(work / seconds, 2),
            "fraction_of_matmul_peak": round(work / seconds / mode_peak, 4),
        }  # of its own dtype's peak
        rows.append(row)
        print(
            f"  {mode:15s} b{batch_size:<3d} {row['seconds']:8.1f} s  {row['tokens_per_s']:7.1f} tok/s"
            f"  x{row['speedup_vs_loop']:.2f}"
            f"  identical {row['identical_to_loop']}/{len(texts)}  same refusal verdict "
            f"{row['refusal_verdict_same_as_loop']}/{len(texts)}  {100 * row['fraction_of_matmul_peak']:.1f} % of peak",
            flush=True,
        )

    result = {
        "benchmark": "generation_throughput",
        "model": opts.model if opts.random_smollm2 else (opts.model_dir or opts.model),
        "device": str(device),
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "prompts": len(texts),
        "max_new_tokens": spec.max_new_tokens,
        "prompt_tokens": sum(prompt_lens),
        "useful_gflop": round(work, 1),
        "matmul_peak_gflops": round(peak, 1),
        **({"matmul_peak_gflops_bf16": round(peaks[torch.bfloat16], 1)} if torch.bfloat16 in peaks else {}),
        "rows": rows,
        "commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    Path(opts.result).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.result).write_text(json.dumps(result, indent=2) + "\n")
    print(
        "\n| mode | batch | seconds | new tok/s | x loop | identical | same refusal verdict "
        "| % matmul peak (own dtype) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['batch_size']} | {r['seconds']} | {r['tokens_per_s']} | {r['speedup_vs_loop']} | "
            f"{r['identical_to_loop']}/{len(texts)} | {r['refusal_verdict_same_as_loop']}/{len(texts)} | "
            f"{100 * r['fraction_of_matmul_peak']:.1f} |"
        )
    print(f"({opts.result})")


if __name__ == "__main__":
    main()

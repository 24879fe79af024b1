"""Benchmark: SNIP's peak memory where the weights, not the activations, dominate (issue 19).

    python bench/snip_memory.py                       # a random 8-layer Llama of hidden 2048, fp32
    python bench/snip_memory.py --layers 4 --hidden 1024

SNIP scores every weight entry by |w * dL/dw|. Taken naively, the backward pass leaves every layer's dense
gradient alive at once (the model's size again) before they are scored, and averaging the scores into new
tensors holds a second copy of them; ``snip_scores`` scores and drops each weight's gradient as soon as it
is complete (a post-accumulate-grad hook) and averages in place. Two modes, each in its own process (its
peak resident set is its own), on the same random model and batches:
  all-grads   the code before (to 2026-12-03): backward, then score every layer from its kept gradient,
              the mean taken into a copy
  hooks       ``qresafe_exp.patch.snip.snip_scores`` as the patch runs it
Both produce the same scores (checked: max abs difference reported). The batches are short (2 x 64
tokens) so that activations are small beside the weights, as they are at 7B per sequence.
A benchmark, not a test: nothing asserts a size. Writes bench/results/snip_memory.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from patch_memory import peak_rss_mb, rss_mb, spawn  # noqa: E402  (bench/)


def build(layers: int, hidden: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.6875),  # Llama-2's MLP ratio (11008 / 4096)
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=hidden // 128,
        vocab_size=4096,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        ids = torch.randint(0, config.vocab_size, (2, 64), generator=generator)
        labels = ids.clone()
        labels[:, :32] = -100  # the prompt half
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return model, batches


def all_grads_scores(model, batches) -> dict[str, torch.Tensor]:
    """The order before: every gradient kept until the backward pass ends, then scored; mean into a copy."""
    from qresafe_exp.lm import named_linears, response_token_logprobs

    linears = named_linears(model, ("lm_head",))
    for p in model.parameters():
        p.requires_grad_(False)
    for m in linears.values():
        m.weight.requires_grad_(True)
    totals = {name: torch.zeros_like(m.weight) for name, m in linears.items()}
    for batch in batches:
        logprobs, _ = response_token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        (-logprobs.mean()).backward()
        for name, m in linears.items():
            totals[name] += batch["input_ids"].shape[0] * (m.weight.detach() * m.weight.grad).abs()
            m.weight.grad = None
    examples = sum(b["input_ids"].shape[0] for b in batches)
    return {name: total / examples for name, total in totals.items()}


def child(mode: str, layers: int, hidden: int, out: str) -> None:
    from qresafe_exp.patch.snip import snip_scores

    model, batches = build(layers, hidden)
    loaded = rss_mb()
    started = time.time()
    scores = all_grads_scores(model, batches) if mode == "all-grads" else snip_scores(model, batches, desc=mode)
    seconds = time.time() - started
    peak = peak_rss_mb()
    torch.save(scores, out)
    row = {
        "mode": mode,
        "seconds": round(seconds, 2),
        "rss_model_mb": round(loaded),
        "rss_peak_mb": round(peak),
        "peak_above_model_mb": round(peak - loaded),
        "weights_mb": round(sum(s.numel() * 4 for s in scores.values()) / 2**20),
    }
    print("RESULT " + json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "snip_memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scores", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.layers, args.hidden, args.scores)
    rows, scores = [], {}
    for mode in ("all-grads", "hooks"):
        path = f"/tmp/snip_memory_{mode}.pt"
        extra = ["--child", mode, "--layers", str(args.layers), "--hidden", str(args.hidden), "--scores", path]
        rows.append(spawn(extra, script=__file__))
        scores[mode] = torch.load(path)
        Path(path).unlink()
        print(json.dumps(rows[-1]), flush=True)
    difference = max((scores["hooks"][n] - scores["all-grads"][n]).abs().max().item() for n in scores["hooks"])
    base = rows[0]["peak_above_model_mb"]
    for row in rows:
        row["peak_above_model_vs_all_grads"] = round(row["peak_above_model_mb"] / base, 2)
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "model": {"layers": args.layers, "hidden": args.hidden, "dtype": "float32", "batches": "2 x (2 x 64 tokens)"},
        "modes": rows,
        "scores_max_abs_difference": difference,
        "note": "one run; the peak above the loaded model, each mode in its own process",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"scores max abs difference {difference:.3g}; wrote {args.out}")


if __name__ == "__main__":
    main()

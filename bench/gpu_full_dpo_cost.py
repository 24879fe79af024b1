"""Q-resafe's patch against full-parameter DPO on a CUDA GPU at Llama-2-7B's shape: the paper's cost claim.

Not a test (CI has no GPU). The paper reports 1.2 GPU-hours for Q-resafe against 3.8-9.6 for full DPO
(Table 11). On a CPU the project measured full DPO's step at 0.90x Q-resafe's (docs/scale.md); this
runs the same comparison where the claim was made, on a GPU:

    python bench/gpu_full_dpo_cost.py --tokenizer DIR --out results.json [--layers 32] [--steps 16]

A seeded random Llama of Llama-2-7B's widths (hidden 4096, MLP 11008, 32 heads; ``--layers`` of them;
the vocabulary is the tokenizer's) is built on the GPU in bf16 and saved; then ``bench/patch_memory.py``
runs each mode in its own process on it (the same Alpaca preference pairs, 8 per step, rank 128,
bf16 autocast, gradient checkpointing, no LoRA dropout): ``dpo`` (LoRA at tau 1), ``qresafe``
(tau 0.6, SNIP mask selected at step 0 and re-selected half-way) and ``dpo-full`` (a dense fp32 delta
on every entry of the seven projections, AdamW on all of them). A mode that fails (out of memory, say)
is recorded with its error and the rest go on; the results are rewritten after every mode. Random
weights give the real model's compute per token, not its text. Ratios are to ``qresafe`` in the same run.
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
sys.path.insert(0, str(ROOT / "bench"))

from patch_memory import LLAMA2_7B_LAYER, _ratios, spawn  # noqa: E402

MODES = ("qresafe", "dpo", "dpo-full")


def build_model(tokenizer_dir: Path, layers: int, out: Path, **widths) -> dict:
    """A random Llama of Llama-2-7B's widths (or ``widths``) with ``layers`` decoder layers, made on the GPU."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        **{**LLAMA2_7B_LAYER, **widths},
        num_hidden_layers=layers,
        vocab_size=len(tok),
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    torch.manual_seed(0)
    started = time.time()
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # the CPU: a dry run of the script
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    if torch.cuda.is_available():  # the modes run in child processes: this one's cached blocks would crowd them out
        torch.cuda.empty_cache()
    return {"layers": layers, "parameters": params, "build_and_save_s": round(time.time() - started, 1)}


def wall_seconds(row: dict) -> float:
    """The training a patch costs: its optimizer steps plus its SNIP mask selections."""
    return row["s_per_step"] * row["steps"] + row.get("snip_seconds", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="a tokenizer directory (SmolLM2's)")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=LLAMA2_7B_LAYER["hidden_size"], help="a dry run: smaller")
    parser.add_argument("--intermediate-size", type=int, default=LLAMA2_7B_LAYER["intermediate_size"])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--work", default="/tmp/qresafe_gpu_cost")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.work) / f"llama2-7b-shape-{args.layers}l-h{args.hidden_size}"
    result = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "steps": args.steps,
        "batch_pairs": args.batch_size,
        "rank": args.rank,
        "settings": {"autocast": "auto (bf16)", "gradient_checkpointing": True, "dropout": 0.0},
        "model": build_model(
            Path(args.tokenizer),
            args.layers,
            model_dir,
            hidden_size=args.hidden_size,
            intermediate_size=args.intermediate_size,
        ),
        "modes": [],
        "note": "one run on one GPU; random weights of Llama-2-7B's widths; ratios to qresafe in the same run",
    }
    print(json.dumps(result["model"]), flush=True)
    common = ["--model", str(model_dir), "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    common += ["--rank", str(args.rank), "--dropout", "0", "--autocast", "auto", "--gradient-checkpointing"]
    for mode in filter(None, args.modes.split(",")):
        started = time.time()
        try:
            row = spawn(["--child", mode, *common], script=str(ROOT / "bench" / "patch_memory.py"))
        except RuntimeError as error:  # out of memory, say: recorded, and the other modes still run
            row = {"mode": mode, "error": str(error)[-1500:]}
        row["process_s"] = round(time.time() - started, 1)
        if "s_per_step" in row:
            row["wall_s"] = round(wall_seconds(row), 2)
        result["modes"].append(row)
        _ratios(result["modes"], "wall_s", "s_per_step", base_mode="qresafe")
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

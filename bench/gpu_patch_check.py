"""The patch trainer on a CUDA GPU (bf16 compute): correctness of the GPU path and its cost.

Not a test (CI has no GPU). Run on a GPU machine with torch / transformers / peft and omegaconf:

    python bench/gpu_patch_check.py --tokenizer <dir> --out results/

1. A random model of SmolLM2-135M's shape is built and "quantized" the llm_qat way (4-bit grid
   weights + fake_quant.json sidecar); masked-LoRA DPO (tau 0.6, mask re-selected every 4 steps) runs
   plain and quantization-aware; the merge is written and reloaded; checks: entries outside the masks
   unchanged, reference unchanged, the quant-aware policy equals its merged checkpoint.
2. If bitsandbytes is importable: the same model NF4-quantized on load, patched, merged into NF4.
3. Timing: seconds per DPO step at the CPU testbed's batch (8 pairs, ~200 tokens), peak CUDA memory.
Writes gpu_patch_check.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qresafe_exp.finetune import collate, tokenize_example  # noqa: E402
from qresafe_exp.formats.fake_quant import write_sidecar  # noqa: E402
from qresafe_exp.lm import named_linears  # noqa: E402
from qresafe_exp.models import load_model  # noqa: E402
from qresafe_exp.patch.masked_lora import attach_masked_lora  # noqa: E402
from qresafe_exp.patch.quantized_view import load_trainable  # noqa: E402
from qresafe_exp.patch.requantize import requantizers, write_merged  # noqa: E402
from qresafe_exp.patch.trainer import _summed_logprobs, reference_logprobs, train_patch  # noqa: E402
from qresafe_exp.quant.fake_quant import attach_weight_quant, bake_weights  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SMOLLM2_SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def patch_cfg(**overrides):
    base = dict(
        name="qresafe",
        objective="dpo",
        tau=0.6,
        mask_scope="per_matrix",
        mask_every=4,
        lr=1e-3,
        beta=0.01,
        epochs=2,
        batch_size=8,
        warmup_fraction=0.1,
        snip_batch_size=4,
        max_length=512,
        max_response_tokens=160,
    )
    base.update(overrides)
    return SimpleNamespace(**base)


def build_models(tokenizer_dir: Path, work: Path) -> tuple[Path, Path]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SMOLLM2_SHAPE,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fp = work / "fp"
    model.save_pretrained(fp)
    tokenizer.save_pretrained(fp)
    linears = {n: m for n, m in named_linears(model).items() if n.split(".")[-1] in TARGETS}
    attach_weight_quant(linears, 4, None)
    bake_weights(linears)
    grid = work / "w4"
    model.save_pretrained(grid)
    tokenizer.save_pretrained(grid)
    write_sidecar(grid, list(linears), 4, None, None, None)
    return fp, grid


def items_for(tokenizer, n: int) -> list[dict]:
    def item(prompt, response):
        return tokenize_example(tokenizer, {"prompt": prompt, "response": response}, 512, 160, None)

    refusal = "I'm sorry, but I can't help with that. It could lead to serious harm, and I won't take part in it."
    comply = "Sure, here is a detailed plan. " + "First gather the materials, then follow each step carefully. " * 6
    return [
        {
            "chosen": item(f"Tell me how to do harmful thing number {i}.", refusal),
            "rejected": item(f"Tell me how to do harmful thing number {i}.", comply),
        }
        for i in range(n)
    ]


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_patch(path: Path, device, cfg, items, pad_id, quant_aware: bool, out: Path) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, linears, _ = load_trainable(str(path), device, TARGETS)
    adapters = attach_masked_lora(model, linears, 128, 256)
    if quant_aware:
        for name, fn in requantizers(str(path), list(adapters)).items():
            adapters[name].requantizer = fn
    base = {n: a.base.weight.detach().clone() for n, a in adapters.items()}
    ref_before = reference_logprobs(model, adapters, items, 8, pad_id)
    _sync(device)
    started = time.time()
    facts = train_patch(model, adapters, items, cfg, pad_id, seed=0)
    _sync(device)
    seconds = time.time() - started
    ref_after = reference_logprobs(model, adapters, items, 8, pad_id)
    outside_changed = sum(
        int((a.effective_weight().detach() != base[n].float())[~a.mask].sum())
        for n, a in adapters.items()
        if a.folded is None
    )
    batch = collate([it["chosen"] for it in items], pad_id)
    with torch.no_grad():
        policy = _summed_logprobs(model, batch).float().cpu()
    deltas = {n: a.delta().detach().cpu() for n, a in adapters.items()}
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0
    del model, adapters, linears
    merge = write_merged(str(path), deltas, out, device)
    with torch.no_grad():
        merged = _summed_logprobs(load_model(str(out), device), batch).float().cpu()
    return {
        "quant_aware": quant_aware,
        "steps": facts["steps"],
        "mask_selections": facts["mask_selections"],
        "loss_first_steps": facts["loss_first_steps"],
        "loss_last_steps": facts["loss_last_steps"],
        "train_loop_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / facts["steps"], 3),
        "snip_seconds": facts["snip_seconds"],
        "cuda_peak_mb": round(peak),
        "reference_unchanged_max_abs": round((ref_after - ref_before).abs().max().item(), 6),
        "entries_outside_mask_changed": outside_changed,
        "merge": merge,
        "policy_vs_merged_logprob_max_abs": round((policy - merged).abs().max().item(), 4),
        "policy_vs_merged_logprob_mean_abs": round((policy - merged).abs().mean().item(), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=SMOLLM2_SHAPE["num_hidden_layers"])  # fewer: a dry run
    args = parser.parse_args()
    SMOLLM2_SHAPE["num_hidden_layers"] = args.layers
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu_patch_check")
    shutil.rmtree(work, ignore_errors=True)
    device = torch.device(args.device)
    import transformers

    report = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "layers": args.layers,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "runs": [],
    }
    fp, grid = build_models(Path(args.tokenizer), work)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fp)
    items = items_for(tokenizer, 48)  # 48 pairs -> 6 steps per epoch at 8 pairs per step
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for quant_aware in (False, True):
        try:
            report["runs"].append(
                {
                    "checkpoint": "llm_qat-style W4 grid",
                    **run_patch(grid, device, patch_cfg(), items, pad, quant_aware, work / f"merged-w4-{quant_aware}"),
                }
            )
        except Exception as err:  # keep going: one failure must not hide the others
            report["runs"].append(
                {
                    "checkpoint": "llm_qat-style W4 grid",
                    "quant_aware": quant_aware,
                    "error": f"{type(err).__name__}: {err}",
                }
            )
    try:
        import bitsandbytes  # noqa: F401
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        nf4 = work / "nf4"
        AutoModelForCausalLM.from_pretrained(
            fp,
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            ),
            dtype=torch.bfloat16,
            device_map=str(device),
        ).save_pretrained(nf4)
        tokenizer.save_pretrained(nf4)
        for quant_aware in (False, True):
            report["runs"].append(
                {
                    "checkpoint": "bnb nf4",
                    **run_patch(nf4, device, patch_cfg(), items, pad, quant_aware, work / f"merged-nf4-{quant_aware}"),
                }
            )
    except Exception as err:
        import traceback

        report["runs"].append(
            {
                "checkpoint": "bnb nf4",
                "error": f"{type(err).__name__}: {err}",
                "where": traceback.format_exc().splitlines()[-6:],
            }
        )
    (out / "gpu_patch_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark: the patch step's peak memory and time against a plain peft LoRA-DPO step (issue 19).

    python bench/patch_memory.py                              # the aligned testbed (or --model DIR)
    python bench/patch_memory.py --modes peft,dpo,qresafe --steps 4
    python bench/patch_memory.py --block7b                    # also one Llama-2-7B-shaped layer block

Every mode runs in its own process (so its peak resident memory is its own) on the same model, the
same preference pairs (Alpaca instructions; chosen / rejected = two Alpaca answers, cut at 128 response
tokens as the patch does), the same batch (8 pairs), rank (128) and number of optimizer steps:
  peft           peft LoRA on the same projections, DPO against the adapter-disabled model: the baseline
  dpo / sft      the project's trainer at tau = 1 (the DPO and SFT baselines)
  qresafe        the project's trainer at tau = 0.6, SNIP mask, re-selected half-way (one SNIP pass more)
  qresafe-dense  the same with Eq. 2 taken literally (autograd keeps the dense masked product): the old form
  dpo-full       full-parameter DPO (patch=dpo_full: a dense delta over every entry, AdamW on all of them),
                 the baseline of the paper's cost claim (Q-resafe 1.2 GPU-hours vs full DPO's 3.8-9.6)
Reports the resident set after loading, the peak (ru_maxrss), the peak above the loaded model, CUDA
peak where there is a GPU, and seconds per optimizer step (mask re-selections timed apart), with ratios
to ``peft`` from the same run. ``--block7b``: a random Llama-2-7B-shaped decoder layer (hidden 4096,
MLP 11008, fp32), one forward + backward of 4,096 tokens through its 7 adapted projections and one AdamW
step per mode (no LoRA dropout: the fused masked form): the step's peak above the set-up layer (the
optimizer's moments included) and the adapter state that stays resident per layer are measured; x32
layers is an extrapolation, stated as such. Block modes ``qresafe-3sel`` / ``qresafe-3sel-uncompact``: the
masked layer after three mask re-selections (three frozen deltas, as at the end of the claim study's
patch), kept compact (packed masks, factored deltas: the default above 4M entries per layer) or as before
(a bool mask and a dense fp32 sum of the frozen deltas).
A benchmark, not a test: nothing asserts a speed. Writes bench/results/patch_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLAMA2_7B_LAYER = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32)
MODES = ("peft", "dpo", "sft", "qresafe", "qresafe-dense", "dpo-full")
BLOCK_MODES = ("peft", "qresafe", "qresafe-dense", "dpo-full", "qresafe-3sel", "qresafe-3sel-uncompact")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def patch_cfg(
    mode: str, steps: int, batch_size: int, rank: int, dropout: float = 0.05, autocast=None, checkpointing: bool = False
) -> SimpleNamespace:
    tau = 0.6 if mode.startswith("qresafe") else 1.0
    return SimpleNamespace(
        name=mode,
        objective="sft" if mode == "sft" else "dpo",
        tau=tau,
        mask_scope="per_matrix",
        mask_score="snip",
        mask_every=max(1, steps // 2),
        mask_map="delta",
        adapter="full" if mode == "dpo-full" else "lora",
        lora_r=rank,
        lora_alpha=2 * rank,
        lora_dropout=dropout,
        lr=1e-4,
        beta=0.1,
        epochs=1,
        batch_size=batch_size,
        warmup_fraction=0.1,
        max_length=512,
        max_response_tokens=128,
        snip_batch_size=4,
        autocast=autocast,
        gradient_checkpointing=checkpointing,
    )


def alpaca_pairs(n: int) -> list[dict]:
    data_dir = Path(os.environ.get("QRESAFE_DATA_DIR", ROOT.parent / "shared" / "data"))
    rows = json.loads((data_dir / "alpaca_en_demo_llamafactory" / "alpaca_en_demo.json").read_text())
    rows = [r for r in rows if len(r["output"]) > 400][: n + 1]  # long answers: the 128-token cut applies
    return [
        {"prompt": rows[i]["instruction"], "chosen": rows[i]["output"], "rejected": rows[i + 1]["output"]}
        for i in range(n)
    ]


def use_dense_masked_forward() -> None:
    """The pre-issue-19 form: W0 x + F.linear(x, s M ⊙ B A + folded), autograd keeping the product."""
    import torch.nn.functional as F

    from qresafe_exp.patch.masked_lora import MaskedLoRALinear

    def forward(self, x):
        if not self.enabled:
            return self.base(x)
        return self.base(x) + F.linear(self.dropout(x), self.delta().to(x.dtype))

    MaskedLoRALinear.forward = forward


def peft_dpo(model, items, cfg, pad_id: int) -> dict:
    """Plain peft LoRA (same rank, alpha, dropout, projections) trained by the same DPO loss and steps."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_cosine_schedule_with_warmup

    from qresafe_exp.devices import autocast_dtype
    from qresafe_exp.finetune import autocast_context, collate, optimizer_step
    from qresafe_exp.patch.dpo import dpo_loss
    from qresafe_exp.patch.trainer import _summed_logprobs

    model = get_peft_model(
        model,
        LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=TARGETS),
    )
    batches = [items[i : i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
    dtype = autocast_dtype(cfg.autocast, next(model.parameters()).device)
    refs = []
    with model.disable_adapter(), torch.no_grad(), autocast_context(model, dtype):
        for chunk in batches:
            batch = collate([it["chosen"] for it in chunk] + [it["rejected"] for it in chunk], pad_id)
            refs.append(_summed_logprobs(model, batch).view(2, len(chunk)).float())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, 1, len(batches))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    started = time.time()
    for chunk, ref in zip(batches, refs):
        batch = collate([it["chosen"] for it in chunk] + [it["rejected"] for it in chunk], pad_id)
        with autocast_context(model, dtype):
            policy = _summed_logprobs(model, batch).view(2, len(chunk)).float()
        loss, _ = dpo_loss(policy[0], policy[1], ref[0], ref[1], cfg.beta)
        optimizer_step(loss, params, optimizer, schedule)
    return {"steps": len(batches), "train_seconds": round(time.time() - started, 2), "snip_seconds": 0.0}


def run_mode(mode: str, model_dir: str, steps: int, batch_size: int, rank: int, **settings) -> dict:
    from qresafe_exp.devices import resolve_device
    from qresafe_exp.models import load_model, load_tokenizer
    from qresafe_exp.patch.masked_lora import attach_masked_lora
    from qresafe_exp.patch.quantized_view import load_trainable
    from qresafe_exp.patch.trainer import tokenize_pairs, train_patch

    device = resolve_device("auto")
    cfg = patch_cfg(mode, steps, batch_size, rank, **settings)
    tokenizer = load_tokenizer(model_dir)
    items = tokenize_pairs(tokenizer, alpaca_pairs(steps * batch_size), cfg, None)
    if mode == "peft":
        model = load_model(model_dir, device)
        loaded = rss_mb()
        facts = peft_dpo(model, items, cfg, tokenizer.pad_token_id)
    else:
        if mode == "qresafe-dense":
            use_dense_masked_forward()
        model, linears, _ = load_trainable(model_dir, device, TARGETS)
        loaded = rss_mb()
        adapters = attach_masked_lora(
            model, linears, cfg.lora_r, cfg.lora_alpha, dropout=cfg.lora_dropout, full=cfg.adapter == "full"
        )
        facts = train_patch(model, adapters, items, cfg, tokenizer.pad_token_id, seed=0)
    row = {
        "mode": mode,
        "steps": facts["steps"],
        "s_per_step": round(facts["train_seconds"] / facts["steps"], 2),
        "snip_seconds": facts.get("snip_seconds", 0.0),
        "rss_loaded_mb": round(loaded),
        "rss_peak_mb": round(peak_rss_mb()),
        "tokens_per_batch": _tokens(items, batch_size),
    }
    row["peak_above_model_mb"] = row["rss_peak_mb"] - row["rss_loaded_mb"]
    if device.type == "cuda":
        row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return row


def _tokens(items: list[dict], batch_size: int) -> float:
    lengths = [len(it["chosen"]["input_ids"]) + len(it["rejected"]["input_ids"]) for it in items]
    return round(sum(lengths) / (len(lengths) / batch_size))


def run_block7b(mode: str, tokens: int, rank: int) -> dict:
    """One Llama-2-7B-shaped decoder layer: forward + backward of ``tokens`` tokens through it."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from qresafe_exp.lm import named_linears
    from qresafe_exp.patch import masked_lora
    from qresafe_exp.patch.masked_lora import attach_masked_lora

    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA2_7B_LAYER, num_hidden_layers=1, vocab_size=32000)
    layer = LlamaDecoderLayer(config, layer_idx=0)
    for p in layer.parameters():
        p.requires_grad_(False)
    seq = 256
    hidden = torch.randn(max(1, tokens // seq), seq, config.hidden_size, requires_grad=True)
    rotary = LlamaRotaryEmbedding(config)
    position = rotary(hidden, torch.arange(seq).unsqueeze(0))
    loaded = rss_mb()
    linears = {n: m for n, m in named_linears(layer).items() if n.split(".")[-1] in TARGETS}
    if mode == "peft":  # peft's LoRA layers injected into the same projections
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS), layer)
        params = [p for n, p in layer.named_parameters() if "lora_" in n]
    else:
        if mode == "qresafe-dense":
            use_dense_masked_forward()
        if mode.endswith("-uncompact"):  # the storage before: bool masks, one dense fp32 frozen sum per layer
            masked_lora.COMPACT_ABOVE = float("inf")
        masks = (
            {n: torch.rand(m.weight.shape) < 0.6 for n, m in linears.items()} if mode.startswith("qresafe") else None
        )
        adapters = attach_masked_lora(layer, linears, rank, 2 * rank, masks=masks, full=mode == "dpo-full")
        del masks  # the adapters hold their own copies
        params = [p for a in adapters.values() for p in a.trainables()]
        with torch.no_grad():
            for a in adapters.values():
                (a.full_delta if mode == "dpo-full" else a.lora_B).normal_(0, 1e-3)  # a patch in progress
                for _ in range(3 if "-3sel" in mode else 0):  # re-selections: freeze, new mask, train on
                    a.fold_and_reset()
                    a.set_mask(torch.rand(a.base.weight.shape) < 0.6)
                    a.lora_B.normal_(0, 1e-3)
    layer.train()
    after_setup = rss_mb()
    started = time.time()
    out = layer(hidden, attention_mask=None, position_embeddings=position)
    out = out[0] if isinstance(out, tuple) else out
    out.float().pow(2).mean().backward()
    torch.optim.AdamW(params, lr=1e-4).step()  # its two moments per trainable entry are part of the step
    seconds = time.time() - started
    grads_ok = all(p.grad is not None for p in params)
    row = {
        "mode": mode,
        "tokens": hidden.shape[0] * seq,
        "seconds": round(seconds, 2),
        "rss_layer_mb": round(loaded),
        "adapter_state_mb": round(after_setup - loaded),
        "rss_peak_mb": round(peak_rss_mb()),
        "grads": grads_ok,
    }
    # the step's own memory: activations kept for the backward pass and its transients, one block
    row["step_peak_above_setup_mb"] = row["rss_peak_mb"] - round(after_setup)
    # what stays resident per layer for the whole run (LoRA factors, the mask), x32 layers: extrapolated
    row["adapter_state_x32_extrapolated_gb"] = round(32 * row["adapter_state_mb"] / 1024, 1)
    return row


def child(args) -> None:
    torch.manual_seed(0)
    if args.block7b_mode:
        row = run_block7b(args.block7b_mode, args.block7b_tokens, args.rank)
    else:
        row = run_mode(args.child, args.model, args.steps, args.batch_size, args.rank, **_settings(args))
    print("RESULT " + json.dumps(row), flush=True)


def _settings(args) -> dict:
    return {"dropout": args.dropout, "autocast": args.autocast, "checkpointing": args.gradient_checkpointing}


def default_model() -> str:
    """The aligned testbed's checkpoint from the artifact cache (built by `make align`)."""
    from hydra import compose, initialize_config_dir

    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.conf import CONF_DIR
    from qresafe_exp.models import materialize
    from qresafe_exp.schema import register_configs

    register_configs()  # the config's defaults name the typed schemas
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config")
    return materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths).path


def spawn(extra: list[str], script: str = __file__) -> dict:
    """Run ``script`` with ``extra`` in its own process (its peak resident set is its own); its RESULT line."""
    cmd = [sys.executable, script, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="HF checkpoint dir (default: the configured model from the cache)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (0: the fused masked form)")
    parser.add_argument("--autocast", choices=["bf16", "auto"], help="bf16 forward passes (default fp32)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--block7b", action="store_true", help="also a Llama-2-7B-shaped layer block per mode")
    parser.add_argument("--block7b-tokens", type=int, default=4096)
    parser.add_argument("--block7b-modes", default=",".join(BLOCK_MODES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "patch_memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--block7b-mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.block7b_mode:
        return child(args)
    model = args.model or default_model()
    common = [
        "--model",
        model,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--rank",
        str(args.rank),
        "--dropout",
        str(args.dropout),
    ]
    common += (["--autocast", args.autocast] if args.autocast else []) + (
        ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    )
    rows = []
    for mode in filter(None, args.modes.split(",")):
        rows.append(spawn(["--child", mode, *common]))
        print(json.dumps(rows[-1]), flush=True)
    _ratios(rows, "rss_peak_mb", "s_per_step", "peak_above_model_mb")
    blocks = []
    if args.block7b:
        for mode in filter(None, args.block7b_modes.split(",")):
            blocks.append(
                spawn(["--block7b-mode", mode, "--block7b-tokens", str(args.block7b_tokens), "--rank", str(args.rank)])
            )
            print(json.dumps(blocks[-1]), flush=True)
        _ratios(blocks, "step_peak_above_setup_mb", "seconds")
    result = {
        "model": model,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch_pairs": args.batch_size,
        "rank": args.rank,
        "settings": _settings(args),
        "modes": rows,
        "block7b": blocks,
        "note": "one run; ratios are to `peft` in the same run; block7b x32 is an extrapolation",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _ratios(rows: list[dict], *keys: str, base_mode: str = "peft") -> None:
    """``{key}_vs_{base_mode}`` on every row that has ``key``: its ratio to the ``base_mode`` row's."""
    base = next((r for r in rows if r["mode"] == base_mode), None)
    if base is None:
        return
    for row in rows:
        for key in keys:
            if base.get(key) and key in row:
                row[f"{key}_vs_{base_mode}"] = round(row[key] / base[key], 2)


if __name__ == "__main__":
    main()

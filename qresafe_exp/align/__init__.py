"""The align stage: safety-tune an FP model into the CPU testbed (``model=smollm2-135m-safe``).

Recipe (LoRA SFT, merged into the weights):
- harmful training prompts -> a short refusal, drawn (seeded) from refusals written for this
  project (``data/testbed/safety_tuning.json``), so the model learns to refuse, not one sentence;
- benign instruction/response pairs -> their answers (keeps the model helpful);
- safe requests that merely sound dangerous -> helpful answers (keeps over-refusal low; written for
  this project, never XSTest/OKTest prompts, which are evaluation data).
The loss covers the assistant tokens only. The merged fp32 checkpoint is an artifact like any
other; its training prompts are saved beside it so that every evaluation set can be de-duplicated
against them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from qresafe_exp.data import load_records
from qresafe_exp.data.normalize import normalize_prompt
from qresafe_exp.lm import response_token_logprobs

log = logging.getLogger(__name__)
TESTBED_FILE = Path(__file__).resolve().parents[1] / "data" / "testbed" / "safety_tuning.json"
ALIGN_STAGE_VERSION = 1
TRAIN_PROMPTS_FILE = "train_prompts.json"


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def _take(records: list, n: int | None, rng: random.Random) -> list:
    return records if n is None or n >= len(records) else rng.sample(records, n)


def build_examples(cfg: DictConfig, data_dir: str | None, cache_dir: str | None) -> list[dict]:
    """The SFT set: [{'prompt', 'response', 'kind'}], shuffled with ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    testbed = json.loads(TESTBED_FILE.read_text())
    refusals = testbed["refusals"]
    harmful = _take(load_records(cfg.harmful_dataset, data_dir, cache_dir), cfg.num_harmful, rng)
    benign = _take(load_records(cfg.benign_dataset, data_dir, cache_dir), cfg.num_benign, rng)
    borderline = _take(testbed["borderline_benign"], cfg.num_borderline, rng)
    examples = [{"prompt": r["prompt"], "response": rng.choice(refusals), "kind": "refusal"} for r in harmful]
    examples += [{"prompt": r["prompt"], "response": r["response"], "kind": "benign"} for r in benign]
    examples += [{"prompt": r["prompt"], "response": r["response"], "kind": "borderline"}
                 for r in borderline] * cfg.borderline_repeats
    rng.shuffle(examples)
    return examples


def tokenize_example(tokenizer, ex: dict, max_length: int, max_response_tokens: int) -> dict:
    """input_ids + labels with the prompt (template included) masked out of the loss."""
    prompt_text = tokenizer.apply_chat_template([{"role": "user", "content": ex["prompt"]}],
                                                add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(ex["response"], add_special_tokens=False)["input_ids"][:max_response_tokens]
    response_ids = response_ids + [tokenizer.eos_token_id]  # learn to stop
    prompt_ids = prompt_ids[-(max_length - len(response_ids)):] if len(prompt_ids) + len(response_ids) > max_length else prompt_ids
    return {"input_ids": prompt_ids + response_ids, "labels": [-100] * len(prompt_ids) + response_ids}


def batches(items: list[dict], batch_size: int, pad_id: int, rng: random.Random):
    """Length-bucketed batches (less padding on CPU), in a random order of buckets."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        width = max(len(items[i]["input_ids"]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            n = len(items[i]["input_ids"])
            ids[row, :n] = torch.tensor(items[i]["input_ids"])
            labels[row, :n] = torch.tensor(items[i]["labels"])
            mask[row, :n] = 1
        yield {"input_ids": ids, "labels": labels, "attention_mask": mask}


def response_loss(causal_lm, batch: dict) -> torch.Tensor:
    """Mean next-token NLL over the response tokens only (see qresafe_exp.lm)."""
    logprobs, _ = response_token_logprobs(causal_lm, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return -logprobs.mean()


def train_sft_lora(base_path: str, out: Path, cfg: DictConfig, examples: list[dict]) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    items = [tokenize_example(tokenizer, ex, cfg.max_length, cfg.max_response_tokens) for ex in examples]
    steps = cfg.epochs * math.ceil(len(items) / cfg.batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, int(0.05 * steps)), steps)
    rng = random.Random(cfg.seed)
    losses, started = [], time.time()
    with tqdm(total=steps, desc="align (LoRA SFT)", unit="step") as bar:
        for epoch in range(cfg.epochs):
            for batch in batches(items, cfg.batch_size, tokenizer.pad_token_id or tokenizer.eos_token_id, rng):
                loss = response_loss(model.get_base_model(), batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.set_postfix(epoch=epoch, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
                bar.update()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    counts = {kind: sum(ex["kind"] == kind for ex in examples) for kind in ("refusal", "benign", "borderline")}
    return {"method": "sft_lora", "examples": counts, "steps": steps, "trainable_params": trainable,
            "loss_first_steps": _mean(losses[: max(1, len(losses) // 10)]),
            "loss_last_steps": _mean(losses[-max(1, len(losses) // 10) :]),
            "train_seconds": round(time.time() - started, 1)}


def align(base_path: str, out: Path, cfg: DictConfig, data_dir: str | None, cache_dir: str | None) -> None:
    if cfg.method != "sft_lora":
        raise ValueError(f"model.align.method='{cfg.method}' is unknown. Allowed: sft_lora")
    examples = build_examples(cfg, data_dir, cache_dir)
    info = train_sft_lora(base_path, out, cfg, examples)
    prompts = sorted({normalize_prompt(ex["prompt"]) for ex in examples})
    (out / TRAIN_PROMPTS_FILE).write_text(json.dumps(prompts))
    (out / "align_info.json").write_text(json.dumps({**info, "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2))
    log.info("aligned: %s", info)


def training_prompts(model_path: str) -> set[str]:
    """Normalised training prompts of an aligned checkpoint (empty for any other model)."""
    path = Path(model_path) / TRAIN_PROMPTS_FILE
    return set(json.loads(path.read_text())) if path.exists() else set()
